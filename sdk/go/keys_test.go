package grayscope

import "testing"

// The same cases as the collector's own classifier (propagation/src/keys.rs): the two must agree,
// or a key the collector calls a near miss never reaches it.
func TestKeysClassifyAsTheCollectorDoes(t *testing.T) {
	k := NewStageKeys("x-release-stage", "http.request.header.x-release-stage")
	for key, want := range map[string]KeyClass{
		"x-release-stage":                     StageKeyClass,
		"http.request.header.x-release-stage": StageKeyClass,
		"x-release-stag":                      NearMiss,
		"X_Release_Stage":                     NearMiss,
		"X-Release-Stage":                     NearMiss,
		"x_release_stage":                     NearMiss,
		"x-relase-stage":                      NearMiss,
		"service.name":                        Unrelated,
		"x-request-id":                        Unrelated,
		"release":                             Unrelated,
		"x-rel":                               Unrelated,
		"deployment.stage":                    Unrelated,
	} {
		if got := k.Classify(key); got != want {
			t.Errorf("Classify(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestLevenshteinCountsCharacters(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "abc", 0}, {"abc", "abd", 1}, {"abc", "", 3}, {"grün", "grun", 1}, {"kitten", "sitting", 3}} {
		if got := levenshtein(c.a, c.b); got != c.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
