package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
)

// Flags are Go flags parsed with the flag package (which takes -name and
// --name alike) but shown and reported the GNU way: --name for long flags,
// -x for one-letter ones, a short flag and its long alias on one line, and
// errors without Go's wording.

// flagAliases pairs a one-letter flag with its long form.
var flagAliases = map[string]string{"o": "output", "f": "filename", "w": "watch"}

// dashed is a flag's name as a user types it: -o, --output.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// printFlags writes fs's flags sorted by long name, one per line:
//
//	-o, --output FORMAT   output format: table, wide, json or yaml (default table)
func printFlags(w io.Writer, fs *flag.FlagSet) {
	type line struct{ key, names, usage string }
	byName := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { byName[f.Name] = f })
	var lines []line
	for name, f := range byName {
		if long, ok := flagAliases[name]; ok && byName[long] != nil {
			continue // printed with its long form
		}
		names := dashed(name)
		for short, long := range flagAliases {
			if long == name && byName[short] != nil {
				names = "-" + short + ", " + names
			}
		}
		if len(names) == 2+len(name) { // no short form: align with those that have one
			names = "    " + names
		}
		arg, usage := flag.UnquoteUsage(f)
		if arg != "" {
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
				names += " " + strings.ToUpper(arg)
			}
		}
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && d != "[]" && !strings.Contains(usage, "(default") {
			usage += " (default " + d + ")"
		}
		lines = append(lines, line{name, names, usage})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].key < lines[j].key })
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "  %s\t%s\n", l.names, l.usage)
	}
	tw.Flush()
}

var (
	reUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	reNeedsArg  = regexp.MustCompile(`^flag needs an argument: -+(.+)$`)
	reBadValue  = regexp.MustCompile(`^invalid (boolean )?value (".*") for (?:flag )?-+([^:]+): (.*)$`)
)

// flagError rewrites the flag package's parse errors in the words a user
// reads: "unknown flag --bogus", "invalid value "x" for --revision: ...".
func flagError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if m := reUndefined.FindStringSubmatch(msg); m != nil {
		return usageError{"unknown flag " + dashed(m[1])}
	}
	if m := reNeedsArg.FindStringSubmatch(msg); m != nil {
		return usageError{"flag " + dashed(m[1]) + " needs a value"}
	}
	if m := reBadValue.FindStringSubmatch(msg); m != nil {
		why := m[4]
		switch {
		case m[1] != "":
			why = "want true or false"
		case why == "parse error":
			why = "not a number"
		case why == "value out of range":
			why = "out of range"
		}
		return usageError{fmt.Sprintf("invalid value %s for %s: %s", m[2], dashed(m[3]), why)}
	}
	return usageError{msg}
}

// explicit reports whether the flag name was given on the command line.
func explicit(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
