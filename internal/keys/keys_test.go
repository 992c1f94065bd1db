package keys

import (
	"strings"
	"testing"
	"testing/quick"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEscapeRoundTrip(t *testing.T) {
	f := func(s string) bool {
		e := Escape(s)
		u, err := Unescape(e)
		return err == nil && u == s && !strings.Contains(e, "/")
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a/b", "%2F", "a%b", "\x00", "ü/ß"} {
		if !f(s) {
			t.Fatalf("round trip of %q", s)
		}
	}
}

// No queue prefix is a prefix of another's: a range over one lock's keys
// never includes another lock's.
func TestPrefixesDoNotNest(t *testing.T) {
	names := []string{"a", "a/b", "a/", "ab", "a%2Fb", "a%", "%", "/", "a b"}
	for _, x := range names {
		for _, y := range names {
			if x == y {
				continue
			}
			px, py := Prefix(DefaultNamespace, "mutex", x), Prefix(DefaultNamespace, "mutex", y)
			if strings.HasPrefix(py, px) {
				t.Errorf("prefix of %q (%s) contains that of %q (%s)", x, px, y, py)
			}
		}
	}
}

func TestUnescapeRejectsBadInput(t *testing.T) {
	for _, s := range []string{"%", "%2", "%zz"} {
		if _, err := Unescape(s); err == nil {
			t.Errorf("Unescape(%q) accepted", s)
		}
	}
}

func TestValidate(t *testing.T) {
	if ValidateName("") == nil || ValidateName(strings.Repeat("x", MaxNameLen+1)) == nil || ValidateName("\xff") == nil {
		t.Fatal("bad names accepted")
	}
	if err := ValidateName(strings.Repeat("x", MaxNameLen)); err != nil {
		t.Fatal(err)
	}
	if ValidateNamespace(strings.Repeat("x", MaxNamespaceLen+1)) == nil {
		t.Fatal("long namespace accepted")
	}
}

// A namespace gets a trailing '/' if it lacks one, once.
func TestNamespace(t *testing.T) {
	for ns, want := range map[string]string{"": "", "app": "app/", "app/": "app/", "a/b": "a/b/", "a//": "a//"} {
		if got := Namespace(ns); got != want {
			t.Errorf("Namespace(%q) = %q, want %q", ns, got, want)
		}
		if got := Prefix(ns, "mutex", "x"); got != want+"mutex/x/" {
			t.Errorf("Prefix(%q, mutex, x) = %q, want %q", ns, got, want+"mutex/x/")
		}
	}
}
