package templates

import (
	"fmt"
	"text/template"
	"text/template/parse"
)

// walk calls visit for every node of a template's parse tree, depth first. text/template has
// no walker of its own.
func walk(n parse.Node, visit func(parse.Node)) {
	if n == nil {
		return
	}
	visit(n)
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, child := range n.Nodes {
			walk(child, visit)
		}
	case *parse.ActionNode:
		walkPipe(n.Pipe, visit)
	case *parse.IfNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.TemplateNode:
		walkPipe(n.Pipe, visit)
	case *parse.PipeNode:
		walkPipe(n, visit)
	case *parse.ChainNode:
		walk(n.Node, visit)
	}
}

func walkBranch(b *parse.BranchNode, visit func(parse.Node)) {
	walkPipe(b.Pipe, visit)
	if b.List != nil {
		walk(b.List, visit)
	}
	if b.ElseList != nil {
		walk(b.ElseList, visit)
	}
}

func walkPipe(p *parse.PipeNode, visit func(parse.Node)) {
	if p == nil {
		return
	}
	for _, v := range p.Decl {
		visit(v)
	}
	for _, cmd := range p.Cmds {
		visit(cmd)
		for _, arg := range cmd.Args {
			walk(arg, visit)
		}
	}
}

// UsesField reports whether a template reads the top-level field key of its data, as .key or
// $.key. It is conservative: .key inside a with or range block (where dot is something else)
// counts too.
func UsesField(t *template.Template, key string) bool {
	found := false
	for _, tmpl := range t.Templates() {
		if tmpl.Tree == nil {
			continue
		}
		walk(tmpl.Tree.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.FieldNode:
				found = found || n.Ident[0] == key
			case *parse.VariableNode:
				found = found || (len(n.Ident) > 1 && n.Ident[0] == "$" && n.Ident[1] == key)
			}
		})
	}
	return found
}

// checkStraightLine refuses the actions that repeat work: range (a loop), and define,
// template and block (a template may call itself).
func checkStraightLine(t *template.Template) error {
	if len(t.Templates()) > 1 {
		return fmt.Errorf("define and block are not allowed here")
	}
	var found string
	walk(t.Tree.Root, func(n parse.Node) {
		switch n.(type) {
		case *parse.RangeNode:
			found = "range"
		case *parse.TemplateNode:
			found = "template"
		}
	})
	if found != "" {
		return fmt.Errorf("%s is not allowed here", found)
	}
	return nil
}
