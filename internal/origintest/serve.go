package origintest

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// chunk is how much the origin writes at a time: small enough that rate
// limits are smooth and faults land close to their byte position.
const chunk = 32 << 10

func (o *Origin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	if target, ok := o.redirects[r.URL.Path]; ok {
		o.mu.Unlock()
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	f := o.files[r.URL.Path]
	if f == nil {
		o.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	f.requests++
	f.active++
	defer f.locked(func() {
		f.active--
		o.answered.Broadcast()
	})
	fl := f.faults
	if fl.statusTimes > 0 {
		f.faults.statusTimes--
	}
	if r.Header.Get("Range") != "" && r.Method == http.MethodGet && f.faults.rangesLeft >= 0 {
		if f.faults.rangesLeft == 0 {
			fl.ignoreRange = true
		} else {
			f.faults.rangesLeft--
		}
	}
	c, etag, modTime := f.content, f.etag, f.modTime
	o.mu.Unlock()

	if fl.statusTimes > 0 {
		if fl.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(fl.retryAfter.Round(time.Second)/time.Second))))
		}
		http.Error(w, http.StatusText(fl.status), fl.status)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	lastModified := modTime.Format(http.TimeFormat)
	h.Set("Last-Modified", lastModified)
	if fl.omitETag {
		etag = ""
	} else {
		h.Set("ETag", etag)
	}

	if notModified(r, etag, modTime) {
		o.mu.Lock()
		f.notModified++
		o.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}

	start, end, partial := int64(0), c.Size-1, false
	if s, e, ok := parseRange(r.Header.Get("Range")); ok && !fl.ignoreRange && ifRangeHolds(r.Header.Get("If-Range"), etag, lastModified) {
		if s >= c.Size {
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(c.Size, 10))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, partial = s, true
		if e >= 0 && e < end {
			end = e
		}
	}
	length := end - start + 1
	if !fl.hideLength {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	status := http.StatusOK
	if partial {
		total := strconv.FormatInt(c.Size, 10)
		if fl.hideLength {
			total = "*"
		}
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10)+"/"+total)
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	o.body(w, r, f, fl, c, start, length)
}

// body writes length bytes of c from start, applying the faults in fl.
func (o *Origin) body(w http.ResponseWriter, r *http.Request, f *File, fl faults, c Content, start, length int64) {
	rc := http.NewResponseController(w)
	buf := make([]byte, chunk)
	scratch := make([]byte, blockSize)
	began := time.Now()
	var sent int64
	for sent < length {
		n := min(int64(chunk), length-sent)
		// Stop exactly at a fault's position.
		if fl.dropTimes > 0 && fl.dropAt > sent {
			n = min(n, fl.dropAt-sent)
		}
		if fl.stallFor > 0 && fl.stallAt > sent {
			n = min(n, fl.stallAt-sent)
		}
		if fl.dropTimes > 0 && sent == fl.dropAt {
			// Responses sent at once share the count: only as many drop.
			drop := false
			f.locked(func() {
				if f.faults.dropTimes > 0 {
					f.faults.dropTimes--
					drop = true
				}
			})
			fl.dropTimes = 0
			if drop {
				rc.Flush()
				// Aborting the handler closes the connection mid-body, which
				// is what a reset looks like to the client.
				panic(http.ErrAbortHandler)
			}
		}
		if fl.stallFor > 0 && sent == fl.stallAt {
			f.locked(func() { f.faults.stallFor = 0 })
			rc.Flush()
			if !o.sleep(r, fl.stallFor) {
				return
			}
			fl.stallFor = 0
		}

		p := buf[:n]
		off := start + sent
		c.fill(p, off, scratch)
		if at := fl.wrongAt; at >= off && at < off+n {
			p[at-off] ^= 0xff
		}
		m, err := w.Write(p)
		sent += int64(m)
		f.locked(func() {
			f.served += int64(m)
			fl.rate = f.faults.rate
		})
		if err != nil {
			return
		}
		if fl.rate > 0 {
			rc.Flush()
			due := time.Duration(float64(sent) / float64(fl.rate) * float64(time.Second))
			if wait := due - time.Since(began); wait > 0 && !o.sleep(r, wait) {
				return
			}
		}
	}
}

// sleep waits d unless the client goes away or the origin stops first; it
// reports whether the full time passed.
func (o *Origin) sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-o.stop:
	}
	return false
}

// parseRange understands one range, "bytes=N-" or "bytes=N-M"; end is -1
// for an open range.
func parseRange(v string) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found || a == "" {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	if b == "" {
		return start, -1, true
	}
	end, err = strconv.ParseInt(b, 10, 64)
	if err != nil || end < start {
		return 0, 0, false
	}
	return start, end, true
}

// ifRangeHolds applies If-Range: no header, the current strong ETag, or
// exactly the current Last-Modified keep the range.
func ifRangeHolds(v, etag, lastModified string) bool {
	switch {
	case v == "":
		return true
	case strings.HasPrefix(v, `"`):
		return etag != "" && v == etag
	case strings.HasPrefix(v, "W/"):
		return false // weak validators never allow a range
	default:
		t, err := http.ParseTime(v)
		lm, _ := http.ParseTime(lastModified)
		return err == nil && t.Equal(lm)
	}
}

// notModified applies If-None-Match (which wins when given) and
// If-Modified-Since to the current validators, as RFC 9110 says for GET and
// HEAD.
func notModified(r *http.Request, etag string, modTime time.Time) bool {
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if etag == "" {
			return false
		}
		for _, v := range strings.Split(inm, ",") {
			v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
			if v == "*" || v == strings.TrimPrefix(etag, "W/") {
				return true
			}
		}
		return false
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" {
		t, err := http.ParseTime(ims)
		return err == nil && !modTime.Truncate(time.Second).After(t)
	}
	return false
}
