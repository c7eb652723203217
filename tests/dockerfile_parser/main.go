// The Dockerfile parser of buildah (openshift/imagebuilder, Debian's
// golang-github-openshift-imagebuilder-dev) as a peer for
// tests/it/oci/dockerfile.rs: `parse` reads Dockerfiles named on the
// command line and prints one JSON document per file; `word WORD NAME=VALUE…`
// prints imagebuilder's expansion of WORD. And Docker's context rules:
// `glob PATTERN NAME…` prints filepath.Match of each name (the rule of COPY
// wildcards); `ignore DOCKERIGNORE PATH…` prints whether Docker's
// dockerignore and patternmatcher leave each path out of the context.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moby/buildkit/frontend/dockerfile/dockerignore"
	"github.com/moby/patternmatcher"

	"github.com/openshift/imagebuilder"
	"github.com/openshift/imagebuilder/dockerfile/parser"
)

type instruction struct {
	Cmd      string   `json:"cmd"`
	Flags    []string `json:"flags"`
	Args     []string `json:"args"`
	JSON     bool     `json:"json"`
	Start    int      `json:"start"`
	End      int      `json:"end"`
	Original string   `json:"original"`
}

func parse(path string) map[string]interface{} {
	f, err := os.Open(path)
	if err != nil {
		return map[string]interface{}{"error": err.Error()}
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return map[string]interface{}{"error": err.Error()}
	}
	out := []instruction{}
	for _, n := range res.AST.Children {
		i := instruction{Cmd: n.Value, Flags: n.Flags, Start: n.StartLine, End: n.EndLine,
			Original: n.Original, JSON: n.Attributes["json"], Args: []string{}}
		if i.Flags == nil {
			i.Flags = []string{}
		}
		for a := n.Next; a != nil; a = a.Next {
			if len(a.Children) > 0 {
				// ONBUILD: the trigger's own line.
				i.Args = append(i.Args, a.Children[0].Original)
				continue
			}
			i.Args = append(i.Args, a.Value)
		}
		out = append(out, i)
	}
	return map[string]interface{}{"escape": string(res.EscapeToken), "instructions": out}
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "glob" {
		out := []interface{}{}
		for _, name := range os.Args[3:] {
			m, err := filepath.Match(os.Args[2], name)
			if err != nil {
				out = append(out, "error")
			} else {
				out = append(out, m)
			}
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "ignore" {
		f, err := os.Open(os.Args[2])
		if err != nil {
			panic(err)
		}
		patterns, err := dockerignore.ReadAll(f)
		if err != nil {
			panic(err)
		}
		pm, err := patternmatcher.New(patterns)
		if err != nil {
			fmt.Println(`"error"`)
			return
		}
		out := []bool{}
		for _, path := range os.Args[3:] {
			m, err := pm.MatchesOrParentMatches(path)
			if err != nil {
				panic(err)
			}
			out = append(out, m)
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "word" {
		w, err := imagebuilder.ProcessWord(os.Args[2], os.Args[3:])
		if err != nil {
			fmt.Println(`{"error": true}`)
			return
		}
		b, _ := json.Marshal(map[string]string{"word": w})
		fmt.Println(string(b))
		return
	}
	for _, path := range os.Args[2:] {
		b, _ := json.Marshal(parse(path))
		fmt.Println(string(b))
	}
}
