package proxy

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Error is a response tokenproxy makes itself (CONTRACT.md §4).
type Error struct {
	Status     int
	Code       string
	Msg        string
	Upstream   string
	RetryAfter time.Duration // sent as Retry-After when positive
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

func badRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_request", Msg: msg}
}

// write sends e with the Tokenproxy-Error header and the JSON body.
func (e *Error) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Tokenproxy-Error", e.Code)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	body, _ := json.Marshal(map[string]string{"error": e.Code, "message": e.Msg, "upstream": e.Upstream})
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(e.Status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg, upstream string) {
	(&Error{Status: status, Code: code, Msg: msg, Upstream: upstream}).write(w)
}
