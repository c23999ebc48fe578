package mtasts_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The package doc's table of Classify's result types and reason codes holds
// every pair that result.go returns, and no other.
func TestPackageDocListsReasonCodes(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	doc, err := parser.ParseFile(fset, "resolver.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	require.NotNil(t, doc.Doc)
	_, table, ok := strings.Cut(doc.Doc.Text(), "Classify's result types and reason codes:\n\n")
	require.True(t, ok, "the package doc has no table of Classify's reason codes")
	documented := map[string]bool{}
	var typ string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		fields := strings.Fields(strings.ReplaceAll(line, ",", " "))
		if !strings.HasPrefix(line, "\t ") { // a new result type
			typ, fields = fields[0], fields[1:]
		}
		for _, reason := range fields {
			documented[typ+" "+reason] = true
		}
	}

	src, err := parser.ParseFile(fset, "result.go", nil, 0)
	require.NoError(t, err)
	values := map[string]string{} // ResultType constants by name
	returned := map[string]bool{}
	pair := func(typ, reason ast.Expr) {
		id, ok1 := typ.(*ast.Ident)
		lit, ok2 := reason.(*ast.BasicLit)
		if ok1 && ok2 && strings.HasPrefix(id.Name, "Result") {
			reason, _ := strconv.Unquote(lit.Value)
			returned[id.Name+" "+reason] = true
		}
	}
	ast.Inspect(src, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			if len(n.Names) == 1 && len(n.Values) == 1 {
				if lit, ok := n.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					values[n.Names[0].Name], _ = strconv.Unquote(lit.Value)
				}
			}
		case *ast.ReturnStmt: // return ResultX, "reason"
			if len(n.Results) >= 2 {
				pair(n.Results[0], n.Results[1])
			}
		case *ast.CompositeLit: // {ErrX, ResultX, "reason"} in policyReasons
			if len(n.Elts) == 3 {
				pair(n.Elts[1], n.Elts[2])
			}
		}
		return true
	})
	want := map[string]bool{}
	for pair := range returned {
		name, reason, _ := strings.Cut(pair, " ")
		require.Contains(t, values, name)
		want[values[name]+" "+reason] = true
	}
	// The policy host's certificate: certResult's reasons under sts-webpki-invalid.
	for pair := range returned {
		if name, reason, _ := strings.Cut(pair, " "); strings.HasPrefix(name, "ResultCertificate") {
			want["sts-webpki-invalid "+reason] = true
		}
	}
	assert.Equal(t, want, documented, "the package doc's table, and what Classify returns")
}
