package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
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
	// both), times the scans it makes (once, or again after each match for those finding
	// every one). Tens of milliseconds at most: a straight-line template (ParseUntrusted) makes
	// a few dozen calls, and nothing else bounds its time.
	MaxWork = 1 << 20
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
			re, err := boundedRegexp(name, expr, s, 2*scans(s, -1)) // its matches counted, then replaced
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
		// The escapers write up to 6 bytes for each they read, so chained they double and more
		// at each step: as builtins they went unchecked (a repeat of 200,000 bytes escaped ten
		// times took gigabytes). The same functions, now checked as every other is.
		"js":       template.JSEscaper,
		"html":     template.HTMLEscaper,
		"urlquery": template.URLQueryEscaper,
	}
	for name, fn := range workBounded() {
		fm[name] = fn
	}
	return fm
}

// workBounded are the functions whose time grew faster than their arguments' size: the regex
// family checks its work (MaxWork) first (a pattern of 40,000 instructions over 20,000 bytes,
// both well within MaxValue, ran for seconds; the functions that find every match scan again
// after each, which a pattern like a*b|a makes quadratic), uniq and without compare by key in
// about linear time (sprig's compared every pair: seconds for 16,000 numbers). A tenant's
// inline check may render dozens of them in the controller, whose four workers serve every
// tenant.
func workBounded() template.FuncMap {
	match := func(name string, must bool) func(string, string) (bool, error) {
		return func(expr, s string) (bool, error) {
			re, err := boundedRegexp(name, expr, s, 1)
			var syntaxErr *syntax.Error
			if !must && errors.As(err, &syntaxErr) {
				return false, nil // sprig's regexMatch: an invalid pattern matches nothing
			}
			if err != nil {
				return false, err
			}
			return re.MatchString(s), nil
		}
	}
	find := func(name string) func(string, string) (string, error) {
		return func(expr, s string) (string, error) {
			re, err := boundedRegexp(name, expr, s, 1)
			if err != nil {
				return "", err
			}
			return re.FindString(s), nil
		}
	}
	every := func(name string, do func(re *regexp.Regexp, s string, n int) []string) func(string, string, int) ([]string, error) {
		return func(expr, s string, n int) ([]string, error) {
			re, err := boundedRegexp(name, expr, s, scans(s, n))
			if err != nil {
				return nil, err
			}
			return do(re, s, n), nil
		}
	}
	findAll := func(re *regexp.Regexp, s string, n int) []string { return re.FindAllString(s, n) }
	split := func(re *regexp.Regexp, s string, n int) []string { return re.Split(s, n) }
	uniq := func(name string) func(any) ([]any, error) {
		return func(list any) ([]any, error) {
			items, err := listItems(name, list)
			if err != nil {
				return nil, err
			}
			seen, out := sameSet{}, []any{}
			for _, item := range items {
				if seen.add(item) {
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
			left := sameSet{}
			for _, item := range omit {
				left.add(item)
			}
			out := []any{}
			for _, item := range items {
				if !left.has(item) {
					out = append(out, item)
				}
			}
			return out, nil
		}
	}
	return template.FuncMap{
		"regexMatch": match("regexMatch", false), "mustRegexMatch": match("mustRegexMatch", true),
		"regexFind": find("regexFind"), "mustRegexFind": find("mustRegexFind"),
		"regexFindAll": every("regexFindAll", findAll), "mustRegexFindAll": every("mustRegexFindAll", findAll),
		"regexSplit": every("regexSplit", split), "mustRegexSplit": every("mustRegexSplit", split),
		"uniq": uniq("uniq"), "mustUniq": uniq("mustUniq"),
		"without": without("without"), "mustWithout": without("mustWithout"),
	}
}

// Bounds of a regular expression's text, and of its compiled program as estimated from its
// parse: both are built before its work is known (a{1000} is 7 bytes and 1,000 instructions).
const (
	maxPattern = 4 << 10
	maxProgram = 4 << 10
)

// boundedRegexp compiles expr for a call of fn that scans text s up to scans times, once its
// work is within MaxWork: the instructions of its program times the bytes of s, each scan.
func boundedRegexp(fn, expr, s string, scans float64) (*regexp.Regexp, error) {
	if len(expr) > maxPattern {
		return nil, fmt.Errorf("%s: the pattern is %d bytes; the limit is %d", fn, len(expr), maxPattern)
	}
	parsed, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	size := programSize(parsed)
	if size > maxProgram {
		return nil, fmt.Errorf("%s: the pattern compiles to about %.0f instructions; the limit is %d", fn, size, maxProgram)
	}
	if err := withinWork(fn, size*float64(len(s)+1)*scans); err != nil {
		return nil, err
	}
	return regexp.Compile(expr)
}

// programSize is at least the instructions re compiles to, from its parse: repeats are
// expanded by compiling, not by parsing.
func programSize(re *syntax.Regexp) float64 {
	var subs float64
	for _, sub := range re.Sub {
		subs += programSize(sub)
	}
	switch re.Op {
	case syntax.OpLiteral:
		return float64(len(re.Rune)) + 1
	case syntax.OpRepeat:
		n := re.Max
		if n < 0 {
			n = re.Min + 1
		}
		return float64(n+1) * (subs + 1)
	}
	return subs + 2
}

// scans is how many times a function finding up to n matches (all: n < 0) may scan s: once
// from each match's end, at most once per byte.
func scans(s string, n int) float64 {
	if n < 0 || n > len(s)+1 {
		return float64(len(s) + 1)
	}
	return float64(max(n, 1))
}

// withinWork checks the steps a call would take.
func withinWork(fn string, steps float64) error {
	if steps > MaxWork {
		return fmt.Errorf("%s would take about %.0f steps; the limit is %d", fn, steps, MaxWork)
	}
	return nil
}

// listItems are a list argument's items.
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

// sameSet holds values as sprig's uniq and without compare them (reflect.DeepEqual), by a key
// that DeepEqual-equal values share (their type and JSON; the type alone for a value JSON
// cannot write), so that each is compared only with the few of its key. A value guarded lets
// through is acyclic and at most MaxValue, so its key costs about its size.
type sameSet map[string][]any

// add adds v unless it holds an equal value, and tells whether it did.
func (s sameSet) add(v any) bool {
	k := sameKey(v)
	for _, held := range s[k] {
		if reflect.DeepEqual(held, v) {
			return false
		}
	}
	s[k] = append(s[k], v)
	return true
}

// has tells whether s holds a value equal to v.
func (s sameSet) has(v any) bool {
	return slices.ContainsFunc(s[sameKey(v)], func(held any) bool { return reflect.DeepEqual(held, v) })
}

func sameKey(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%T", v)
	}
	return fmt.Sprintf("%T\x00%s", v, b)
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
