package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	require.NoError(t, run(&out), "run: output so far:\n%s", out.String())
	text := out.String()

	scenes := strings.Split(text, "\n\n")
	require.Len(t, scenes, 4, "an introduction and three scenes:\n%s", text)

	tests := []struct {
		name  string
		scene string
		want  []string
		not   []string
	}{
		{"no policy", scenes[1],
			[]string{"MTA-STS: no policy", "Contoso delivers to mx.attacker.com"},
			[]string{"refuses"}},
		{"enforce", scenes[2],
			[]string{
				"MTA-STS: enforce policy",
				"Contoso refuses mx.attacker.com: mtasts: MX host not allowed by policy",
				"the message stays queued",
				"Contoso delivers to mx.fabrikam.com",
			},
			[]string{"delivers to mx.attacker.com"}},
		{"testing", scenes[3],
			[]string{
				"MTA-STS: testing policy",
				"Contoso delivers to mx.attacker.com, and would report: validation-failure",
			},
			[]string{"refuses"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, want := range tt.want {
				assert.Contains(t, tt.scene, want, "scene %q", tt.name)
			}
			for _, not := range tt.not {
				assert.NotContains(t, tt.scene, not, "scene %q", tt.name)
			}
		})
	}
}
