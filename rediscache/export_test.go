package rediscache

import "time"

// SetUnavailableFor sets how long c fails at once after Redis failed, so
// that tests do not depend on how fast a loaded machine runs them.
func SetUnavailableFor(c *Cache, d time.Duration) { c.downFor = d }
