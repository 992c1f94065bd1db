package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// helpTopic is a section of help that several commands share, which
// "etcdlock help <topic>" prints instead of each command repeating it.
type helpTopic struct {
	name, summary, text string
}

// helpTopics are the shared sections, in the order "etcdlock help" lists
// them.
var helpTopics = []helpTopic{
	{"connection", "the connection flags, their environment variables, and errors", cmdline.ConnHelp},
	{"supervision", "how run and elect stop CMD when the hold is lost, and forward signals", graceHelp},
}

// seeAlsoHelp ends the description of run and elect.
const seeAlsoHelp = `
Durations are Go's (10s, 1m30s) or whole seconds (10). How CMD is stopped
when the hold is lost, and which signals reach it: 'etcdlock help
supervision'. Connection flags: 'etcdlock help connection'.
`

// connSeeAlso ends the description of the other commands that connect.
const connSeeAlso = `
Connection flags and their environment variables: 'etcdlock help connection'.`

// lookupTopic returns the help topic called name, or nil.
func lookupTopic(name string) *helpTopic {
	for i := range helpTopics {
		if helpTopics[i].name == name {
			return &helpTopics[i]
		}
	}
	return nil
}

// printTopic writes the help topic t to w.
func printTopic(w io.Writer, t *helpTopic) {
	fmt.Fprintf(w, "etcdlock help %s: %s\n\n%s\n", t.name, t.summary, strings.TrimSpace(t.text))
}
