package mtasts

import "testing"

func TestJoinTXT(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"v=STSv1; id=1;"}, "v=STSv1; id=1;"},
		{[]string{"v=STSv1; ", "id=ab", "c;"}, "v=STSv1; id=abc;"},
		{[]string{`v=STSv1;\009id=1;`}, "v=STSv1;\tid=1;"},
		{[]string{`a\"b\\c`}, `a"b\c`},
		{[]string{`\255\000`}, "\xff\x00"},
		{[]string{`\256`}, "256"},
		{[]string{`\12`}, "12"},
		{[]string{`end\`}, `end\`},
		{[]string{`a\`, `b`}, `a\b`},
		{nil, ""},
	}
	for _, tc := range cases {
		if got := joinTXT(tc.in); got != tc.want {
			t.Errorf("joinTXT(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
