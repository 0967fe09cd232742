// Package suggest finds the known name nearest to a mistyped one, for the
// "did you mean ...?" of an unknown command, flag, config key or value.
package suggest

import (
	"strings"

	"github.com/hbollon/go-edlib"
)

// Nearest returns the name in known that word most likely meant, or "" when
// none is close enough. Close is an edit distance (optimal string alignment,
// so that a swap of two letters is one edit; case ignored) of at most one
// for words up to five letters, two up to eight, three beyond; failing
// that, one of the two being a prefix of the other, at least three letters
// long ("warning" for warn, as cobra also suggests). On a tie the earlier
// name in known wins.
func Nearest(word string, known []string) string {
	word = strings.ToLower(word)
	limit := min(3, max(1, (len(word)+1)/3))
	best, bestScore := "", limit+2
	for _, k := range known {
		lk := strings.ToLower(k)
		score := edlib.OSADamerauLevenshteinDistance(word, lk)
		if score > limit {
			score = limit + 2
			if len(word) >= 3 && len(lk) >= 3 && (strings.HasPrefix(word, lk) || strings.HasPrefix(lk, word)) {
				score = limit + 1
			}
		}
		if score < bestScore {
			best, bestScore = k, score
		}
	}
	return best
}

// DidYouMean is "; did you mean \"name\"?" for the nearest known name, or ""
// when there is none, ready to end a message.
func DidYouMean(word string, known []string) string {
	if n := Nearest(word, known); n != "" {
		return `; did you mean "` + n + `"?`
	}
	return ""
}
