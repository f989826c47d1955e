package server

import (
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The API example on the page at / is one that works: it sends a token.
func TestHomePageCurlAuthorizes(t *testing.T) {
	rec := httptest.NewRecorder()
	homePage("test").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := html.UnescapeString(rec.Body.String())
	if rec.Code != http.StatusOK || !strings.Contains(body, "curl ") {
		t.Fatalf("GET /: %d\n%s", rec.Code, body)
	}
	if !strings.Contains(body, `-H "Authorization: Bearer $QUARRY_TOKEN"`) || !strings.Contains(body, "admin.token") {
		t.Errorf("the curl example on / sends no token, or does not say where one is:\n%s", body)
	}
}
