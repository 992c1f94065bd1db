package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// ParseDuration parses a duration flag's value: a Go duration ("10s",
// "1m30s", "500ms") or, as etcdctl users type TTLs, a whole number of
// seconds ("10" is 10s, "0" is 0).
func ParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
			return 0, errors.New("out of range")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration (say 10s, 1m30s, 500ms, or whole seconds: 10)")
	}
	return d, nil
}

// durationValue is a flag.Value of a duration parsed by ParseDuration.
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// DurationVar defines a duration flag on fs, like fs.DurationVar, whose
// value may also be a whole number of seconds (see ParseDuration).
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}

// flagErrors rewrite the errors of package flag, which name a flag with
// one dash and say "parse error", into the command's own words: in repl,
// %[1]s is the flag as the help spells it and %[2]s and %[3]s the other
// parts the expression captures.
var flagErrors = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), "unknown flag %[1]s"},
	{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), "flag %[1]s needs a value"},
	{regexp.MustCompile(`^invalid boolean value (".*") for -+(\S+): .*$`), "invalid value %[2]s for %[1]s: want true or false"},
	{regexp.MustCompile(`^invalid boolean flag (\S+): .*$`), "invalid value for %[1]s: want true or false"},
	{regexp.MustCompile(`^invalid value (".*") for flag -+(\S+): parse error$`), "invalid value %[2]s for %[1]s: not a whole number"},
	{regexp.MustCompile(`^invalid value (".*") for flag -+(\S+): (.*)$`), "invalid value %[2]s for %[1]s: %[3]s"},
}

// FlagErrorText returns the error of a flag set's Parse as one line in the
// command's words: "unknown flag --bogus", `invalid value "abc" for --ttl:
// ...`, "invalid value ... for -n".
func FlagErrorText(err error) string {
	msg := OneLine(err.Error())
	for _, fe := range flagErrors {
		m := fe.re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		// The flag's name is the last capture but for a value's error,
		// where the value comes first.
		name, other, extra := m[1], "", ""
		if len(m) > 2 {
			name, other = m[2], m[1]
		}
		if len(m) > 3 {
			extra = m[3]
		}
		flagName := "--" + name
		if len(name) == 1 {
			flagName = "-" + name // as the help shows -n
		}
		return fmt.Sprintf(fe.repl, flagName, other, extra)
	}
	return msg
}
