package templates

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"regexp/syntax"
	"strings"
	"text/template"
	"unicode/utf8"
)

// Limits of a restricted Cache (see Restricted).
const (
	// MaxOutput bounds what one execution writes.
	MaxOutput = 64 << 10
	// MaxValue bounds the size of every argument and result of a function: the bytes of its
	// strings plus 8 per number, list item or map entry (see weigh).
	MaxValue = 256 << 10
	// MaxItems bounds the lists until, untilStep and seq make.
	MaxItems = 10000
	// maxWidth bounds a printf width or precision: fmt pads into memory before writing.
	maxWidth = 1000
	// MaxWork bounds the steps of one call of a regular expression function: its compiled
	// instructions times the bytes of its text (Go's regexp runs in time proportional to
	// both). A few milliseconds: a straight-line template (ParseUntrusted) makes a few dozen
	// calls at most, and nothing else bounds its time.
	MaxWork = 1 << 18
)

// denied are the sprig functions a restricted Cache leaves out: they read the process's
// environment or the network, generate keys and certificates, hash passwords at a cost the
// caller picks, or return random values (a grant or a check must render the same each time).
var denied = []string{
	"env", "expandenv", "getHostByName",
	"genPrivateKey", "derivePassword", "buildCustomCert", "genCA", "genCAWithKey",
	"genSelfSignedCert", "genSelfSignedCertWithKey", "genSignedCert", "genSignedCertWithKey",
	"bcrypt", "htpasswd",
	"randAlphaNum", "randAlpha", "randAscii", "randNumeric", "randBytes", "randInt", "shuffle", "uuidv4",
}

// Restricted limits a Cache for templates whose authors are not trusted with the process
// (SPEC §4.7): sprig without the denied functions; functions that build a value larger than
// their arguments (repeat, indent, nindent, until, untilStep, seq, replace, wrapWith, join, the
// regexReplaceAll family, printf) check its size first, and those whose time grows faster than
// their arguments check their work (the regex family: MaxWork) or are made linear (uniq,
// without); every function's arguments and result must weigh at most MaxValue; one execution
// may write at most MaxOutput. Each is an error, never a truncation.
func Restricted() Option {
	return func(c *Cache) {
		c.funcs = restrictedFuncs
		c.maxOutput = MaxOutput
	}
}

// restrictedFuncs is built once, like funcs.
var restrictedFuncs = func() template.FuncMap {
	f := template.FuncMap{}
	for name, fn := range funcs {
		f[name] = fn
	}
	for _, name := range denied {
		delete(f, name)
	}
	for name, fn := range bounded() {
		f[name] = fn
	}
	for name, fn := range f {
		f[name] = guarded(name, fn)
	}
	return f
}()

// tooLarge is the error of a value over a limit.
func tooLarge(fn string, size float64, limit int) error {
	return fmt.Errorf("%s would make a value of about %.0f bytes or items; the limit is %d", fn, size, limit)
}

// within checks a size computed before the work it measures (in float64: the factors are
// tenant-chosen ints whose product can overflow).
func within(fn string, size float64, limit int) error {
	if size > float64(limit) {
		return tooLarge(fn, size, limit)
	}
	return nil
}

// bounded are the functions whose result can be much larger than their arguments, each
// checking the size it would make before making it.
func bounded() template.FuncMap {
	sprigFn := func(name string) reflect.Value { return reflect.ValueOf(funcs[name]) }
	call := func(name string, args ...any) any {
		in := make([]reflect.Value, len(args))
		for i, a := range args {
			in[i] = reflect.ValueOf(a)
		}
		return sprigFn(name).Call(in)[0].Interface()
	}
	indent := func(name string) func(int, string) (string, error) {
		return func(spaces int, s string) (string, error) {
			lines := float64(strings.Count(s, "\n") + 1)
			if err := within(name, float64(len(s))+math.Abs(float64(spaces))*lines, MaxValue); err != nil {
				return "", err
			}
			return call(name, spaces, s).(string), nil
		}
	}
	regexReplace := func(name string, expands bool) func(string, string, string) (string, error) {
		return func(expr, s, repl string) (string, error) {
			re, err := boundedRegexp(name, expr, s)
			if err != nil {
				return "", err
			}
			each := float64(len(repl))
			if expands { // every $ of repl may expand to a whole submatch, at most s
				each += float64(strings.Count(repl, "$")) * float64(len(s))
			}
			if err := within(name, float64(len(s))+float64(len(re.FindAllStringIndex(s, -1)))*each, MaxValue); err != nil {
				return "", err
			}
			return re.ReplaceAllString(s, repl), nil
		}
	}
	fm := template.FuncMap{
		"repeat": func(count int, s string) (string, error) {
			if err := within("repeat", float64(count)*float64(len(s)), MaxValue); err != nil {
				return "", err
			}
			return strings.Repeat(s, max(count, 0)), nil
		},
		"indent":  indent("indent"),
		"nindent": indent("nindent"),
		"until": func(count int) ([]int, error) {
			if err := within("until", math.Abs(float64(count)), MaxItems); err != nil {
				return nil, err
			}
			return call("until", count).([]int), nil
		},
		"untilStep": func(start, stop, step int) ([]int, error) {
			if err := within("untilStep", steps(start, stop, step), MaxItems); err != nil {
				return nil, err
			}
			return call("untilStep", start, stop, step).([]int), nil
		},
		"seq": func(params ...int) (string, error) {
			if err := within("seq", seqSteps(params), MaxItems); err != nil {
				return "", err
			}
			return sprigFn("seq").CallSlice([]reflect.Value{reflect.ValueOf(params)})[0].String(), nil
		},
		"replace": func(old, new, src string) (string, error) {
			n := strings.Count(src, old)
			if old == "" {
				n = utf8.RuneCountInString(src) + 1
			}
			if err := within("replace", float64(len(src))+float64(n)*float64(len(new)), MaxValue); err != nil {
				return "", err
			}
			return strings.ReplaceAll(src, old, new), nil
		},
		"wrapWith": func(l int, sep, s string) (string, error) {
			if err := within("wrapWith", float64(len(s))+float64(len(s)/max(l, 1)+1)*float64(len(sep)), MaxValue); err != nil {
				return "", err
			}
			return call("wrapWith", l, sep, s).(string), nil
		},
		"join": func(sep string, v any) (string, error) {
			items := call("toStrings", v).([]string)
			size := float64(len(items)) * float64(len(sep))
			for _, s := range items {
				size += float64(len(s))
			}
			if err := within("join", size, MaxValue); err != nil {
				return "", err
			}
			return strings.Join(items, sep), nil
		},
		"regexReplaceAll":            regexReplace("regexReplaceAll", true),
		"mustRegexReplaceAll":        regexReplace("mustRegexReplaceAll", true),
		"regexReplaceAllLiteral":     regexReplace("regexReplaceAllLiteral", false),
		"mustRegexReplaceAllLiteral": regexReplace("mustRegexReplaceAllLiteral", false),
		// text/template's builtins, replaced: a template's function map comes first.
		"printf": func(format string, args ...any) (string, error) {
			if err := checkFormat(format); err != nil {
				return "", err
			}
			return fmt.Sprintf(format, args...), nil
		},
		"print":   fmt.Sprint,
		"println": fmt.Sprintln,
	}
	for name, fn := range workBounded() {
		fm[name] = fn
	}
	return fm
}

// workBounded are the functions whose time grew faster than their arguments' size: the regex
// family checks its work (MaxWork) first (a pattern of 40,000 instructions over 20,000 bytes,
// both well within MaxValue, ran for seconds), uniq and without compare by key in linear time
// (sprig's took seconds for 16,000 numbers). A tenant's inline check may render dozens of them
// in the controller, whose four workers serve every tenant.
func workBounded() template.FuncMap {
	match := func(name string) func(string, string) (bool, error) {
		return func(expr, s string) (bool, error) {
			re, err := boundedRegexp(name, expr, s)
			if err != nil {
				return false, err
			}
			return re.MatchString(s), nil
		}
	}
	find := func(name string) func(string, string) (string, error) {
		return func(expr, s string) (string, error) {
			re, err := boundedRegexp(name, expr, s)
			if err != nil {
				return "", err
			}
			return re.FindString(s), nil
		}
	}
	findAll := func(name string) func(string, string, int) ([]string, error) {
		return func(expr, s string, n int) ([]string, error) {
			re, err := boundedRegexp(name, expr, s)
			if err != nil {
				return nil, err
			}
			return re.FindAllString(s, n), nil
		}
	}
	split := func(name string) func(string, string, int) ([]string, error) {
		return func(expr, s string, n int) ([]string, error) {
			re, err := boundedRegexp(name, expr, s)
			if err != nil {
				return nil, err
			}
			return re.Split(s, n), nil
		}
	}
	uniq := func(name string) func(any) ([]any, error) {
		return func(list any) ([]any, error) {
			items, err := listItems(name, list)
			if err != nil {
				return nil, err
			}
			seen, out := map[string]bool{}, []any{}
			for _, item := range items {
				if k := sameKey(item); !seen[k] {
					seen[k] = true
					out = append(out, item)
				}
			}
			return out, nil
		}
	}
	without := func(name string) func(any, ...any) ([]any, error) {
		return func(list any, omit ...any) ([]any, error) {
			items, err := listItems(name, list)
			if err != nil {
				return nil, err
			}
			left := map[string]bool{}
			for _, item := range omit {
				left[sameKey(item)] = true
			}
			out := []any{}
			for _, item := range items {
				if !left[sameKey(item)] {
					out = append(out, item)
				}
			}
			return out, nil
		}
	}
	return template.FuncMap{
		"regexMatch": match("regexMatch"), "mustRegexMatch": match("mustRegexMatch"),
		"regexFind": find("regexFind"), "mustRegexFind": find("mustRegexFind"),
		"regexFindAll": findAll("regexFindAll"), "mustRegexFindAll": findAll("mustRegexFindAll"),
		"regexSplit": split("regexSplit"), "mustRegexSplit": split("mustRegexSplit"),
		"uniq": uniq("uniq"), "mustUniq": uniq("mustUniq"),
		"without": without("without"), "mustWithout": without("mustWithout"),
	}
}

// maxPattern bounds a regular expression's text, which is parsed and compiled before its work
// is known.
const maxPattern = 4 << 10

// boundedRegexp compiles expr for a call of fn over text s once its work is within MaxWork:
// the instructions of its compiled program times the bytes of s.
func boundedRegexp(fn, expr, s string) (*regexp.Regexp, error) {
	if len(expr) > maxPattern {
		return nil, fmt.Errorf("%s: the pattern is %d bytes; the limit is %d", fn, len(expr), maxPattern)
	}
	parsed, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, err
	}
	if err := withinWork(fn, float64(len(prog.Inst))*float64(len(s)+1)); err != nil {
		return nil, err
	}
	return regexp.Compile(expr)
}

// withinWork checks the steps a call would take.
func withinWork(fn string, steps float64) error {
	if steps > MaxWork {
		return fmt.Errorf("%s would take about %.0f steps; the limit is %d", fn, steps, MaxWork)
	}
	return nil
}

// listItems are a list argument's items (sprig's uniq and without compare every item with
// every other, in time growing with the square of the list, hence these, by key).
func listItems(fn string, list any) ([]any, error) {
	switch v := reflect.ValueOf(list); v.Kind() {
	case reflect.Slice, reflect.Array:
		items := make([]any, v.Len())
		for i := range items {
			items[i] = v.Index(i).Interface()
		}
		return items, nil
	}
	return nil, fmt.Errorf("%s: cannot find the items of type %T", fn, list)
}

// sameKey is a key equal for values reflect.DeepEqual finds equal, as sprig compares them: the
// type and fmt's rendering (maps in key order). A value guarded lets through is acyclic and at
// most MaxValue, so the key costs about its size.
func sameKey(v any) string {
	return fmt.Sprintf("%T\x00%#v", v, v)
}

// steps is how many items untilStep(start, stop, step) makes, at most.
func steps(start, stop, step int) float64 {
	if step == 0 {
		return 0
	}
	return math.Abs(float64(stop)-float64(start)) / math.Abs(float64(step))
}

// seqSteps is how many numbers sprig's seq makes of its parameters, at most.
func seqSteps(p []int) float64 {
	switch len(p) {
	case 1:
		return steps(1, p[0], 1) + 1
	case 2:
		return steps(p[0], p[1], 1) + 1
	case 3:
		return steps(p[0], p[2], p[1]) + 1
	}
	return 0
}

// printfVerb finds a verb's width and precision; fmt has no parser of its own to ask.
var printfVerb = regexp.MustCompile(`%[-+# 0]*(\[\d+\])?(\*|\d*)(\.(\[\d+\])?(\*|\d*))?`)

// checkFormat refuses a printf format with a width or precision from an argument (*) or above
// maxWidth: fmt would pad that much in memory.
func checkFormat(format string) error {
	for _, m := range printfVerb.FindAllStringSubmatch(format, -1) {
		for _, n := range []string{m[2], m[5]} {
			if n == "*" {
				return fmt.Errorf("printf: a width or precision from an argument (*) is not allowed")
			}
			if len(n) > 4 || n != "" && atoi(n) > maxWidth {
				return fmt.Errorf("printf: width or precision %s is above %d", n, maxWidth)
			}
		}
	}
	return nil
}

func atoi(digits string) int {
	n := 0
	for _, d := range digits {
		n = n*10 + int(d-'0')
	}
	return n
}

// guarded wraps a function so that every argument and its result weigh at most MaxValue; it
// reports a violation by panicking, which text/template turns into an execution error naming
// the function. A large value can then not be built up step by step (a list doubled by concat,
// a string by cat), whatever function does it.
func guarded(name string, fn any) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		for _, a := range args {
			if w := weigh(a, MaxValue); w > MaxValue {
				panic(fmt.Errorf("an argument of %s weighs more than %d bytes", name, MaxValue))
			}
		}
		var out []reflect.Value
		if t.IsVariadic() {
			out = v.CallSlice(args)
		} else {
			out = v.Call(args)
		}
		if len(out) > 0 {
			if w := weigh(out[0], MaxValue); w > MaxValue {
				panic(fmt.Errorf("%s made a value weighing more than %d bytes", name, MaxValue))
			}
		}
		return out
	}).Interface()
}

// weigh measures a value: the bytes of its strings plus 8 for every other leaf, list item and
// map entry. It stops as soon as the total passes budget, so it costs at most about budget
// steps whatever the value, a cyclic one (a dict set into itself) included.
func weigh(v reflect.Value, budget int) int {
	total := 0
	var walk func(reflect.Value)
	walk = func(v reflect.Value) {
		if total > budget || !v.IsValid() {
			return
		}
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.String:
			total += v.Len()
		case reflect.Slice, reflect.Array:
			if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
				total += v.Len()
				return
			}
			for i := 0; i < v.Len() && total <= budget; i++ {
				total += 8
				walk(v.Index(i))
			}
		case reflect.Map:
			for it := v.MapRange(); it.Next() && total <= budget; {
				total += 8
				walk(it.Key())
				walk(it.Value())
			}
		default:
			total += 8
		}
	}
	walk(v)
	return total
}
