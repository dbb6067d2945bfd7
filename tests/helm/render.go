// render: renders a Helm chart's templates the way `helm template` does,
// with Go's text/template, the sprig function library and sigs.k8s.io/yaml
// (the three Helm's engine is built on), for machines without helm.
//
//	render CHART RELEASE [-f VALUES]... [--set KEY=VALUE]...
//
// It covers what a chart of plain templates uses: .Values (values.yaml,
// then each -f merged over it as Helm merges, null removing a key, then
// --set), .Release, .Chart, include, required, fail, toYaml, and every
// sprig function. The output is Helm's: one document per template that
// renders to something, after a "# Source:" comment.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"sigs.k8s.io/yaml"
)

func readYAML(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail(fmt.Errorf("%s: %w", path, err))
	}
	return out
}

// merge puts over onto base: maps merge key by key, null removes a key.
func merge(base, over map[string]interface{}) {
	for k, v := range over {
		if v == nil {
			delete(base, k)
			continue
		}
		if vm, ok := v.(map[string]interface{}); ok {
			if bm, ok := base[k].(map[string]interface{}); ok {
				merge(bm, vm)
				continue
			}
		}
		base[k] = v
	}
}

func set(values map[string]interface{}, assignment string) {
	key, value, ok := strings.Cut(assignment, "=")
	if !ok {
		fail(fmt.Errorf("--set %s: expected KEY=VALUE", assignment))
	}
	parts := strings.Split(key, ".")
	at := values
	for _, p := range parts[:len(parts)-1] {
		next, ok := at[p].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			at[p] = next
		}
		at = next
	}
	at[parts[len(parts)-1]] = value
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "render:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: render CHART RELEASE [-f VALUES]... [--set KEY=VALUE]..."))
	}
	chart, release := os.Args[1], os.Args[2]
	values := readYAML(filepath.Join(chart, "values.yaml"))
	args := os.Args[3:]
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-f":
			merge(values, readYAML(args[i+1]))
		case "--set":
			set(values, args[i+1])
		default:
			fail(fmt.Errorf("unknown argument %s", args[i]))
		}
	}
	meta := readYAML(filepath.Join(chart, "Chart.yaml"))
	data := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": release, "Namespace": "default", "Service": "Helm"},
		"Chart":   map[string]interface{}{"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = func(v interface{}) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	funcs["required"] = func(message string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", message)
		}
		return v, nil
	}
	funcs["fail"] = func(message string) (string, error) { return "", fmt.Errorf("%s", message) }
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	root.Funcs(funcs).Option("missingkey=zero")

	files, err := filepath.Glob(filepath.Join(chart, "templates", "*"))
	if err != nil {
		fail(err)
	}
	sort.Strings(files)
	name := filepath.Base(chart)
	var rendered []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			fail(err)
		}
		tname := name + "/templates/" + filepath.Base(f)
		if _, err := root.New(tname).Parse(string(text)); err != nil {
			fail(err)
		}
		if !strings.HasPrefix(filepath.Base(f), "_") {
			rendered = append(rendered, tname)
		}
	}
	for _, tname := range rendered {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, data); err != nil {
			fail(err)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(out) == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s\n%s\n", tname, out)
	}
}
