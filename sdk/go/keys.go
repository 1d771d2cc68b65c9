package grayscope

import (
	"strings"
	"unicode/utf8"
)

// nearMissDistance is the edit distance within which a key counts as a near miss of a stage key,
// as the collector counts it.
const nearMissDistance = 2

// KeyClass says what an attribute or baggage key is to grayscope.
type KeyClass int

const (
	// Unrelated keys are not copied onto spans.
	Unrelated KeyClass = iota
	// StageKeyClass is a configured stage key.
	StageKeyClass
	// NearMiss is a key that is not configured but close to one (x-release-stag, X_Release_Stage):
	// the bug grayscope reports as key_mismatch, which it can only see if the key reaches a span.
	NearMiss
)

// StageKeys classifies keys against the configured stage keys with the collector's rule: a near
// miss equals a configured key after lower-casing and '_' -> '-', or is within edit distance 2 of
// one.
type StageKeys struct {
	keys       []string
	normalized []string
	minLen     int
	maxLen     int
}

// NewStageKeys returns a classifier for these keys.
func NewStageKeys(keys ...string) *StageKeys {
	k := &StageKeys{keys: keys, minLen: -1}
	for _, key := range keys {
		k.normalized = append(k.normalized, normalize(key))
		if k.minLen < 0 || len(key) < k.minLen {
			k.minLen = len(key)
		}
		k.maxLen = max(k.maxLen, len(key))
	}
	k.minLen = max(k.minLen-nearMissDistance, 0)
	k.maxLen += nearMissDistance
	return k
}

// Classify says whether key is a stage key, a near miss of one, or unrelated.
func (k *StageKeys) Classify(key string) KeyClass {
	// Edit distance is at least the difference in length: most keys need no string work.
	if len(key) < k.minLen || len(key) > k.maxLen {
		return Unrelated
	}
	for _, s := range k.keys {
		if s == key {
			return StageKeyClass
		}
	}
	chars := utf8.RuneCountInString(key)
	n := ""
	for _, s := range k.normalized {
		if abs(utf8.RuneCountInString(s)-chars) > nearMissDistance {
			continue
		}
		if n == "" {
			n = normalize(key)
		}
		if s == n || levenshtein(s, n) <= nearMissDistance {
			return NearMiss
		}
	}
	return Unrelated
}

func normalize(key string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' {
			return '-'
		}
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, key)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// levenshtein is the edit distance between a and b, in characters.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
