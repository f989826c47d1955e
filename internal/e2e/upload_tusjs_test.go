package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tusScript uploads a file with tus-js-client, the dashboard's client, under
// Node: 1 MiB PATCHes, retries as the dashboard configures them. It prints
// "progress" lines, then "success <url>" or "error <message>".
const tusScript = `
const tus = require('tus-js-client');
const fs = require('fs');
const [endpoint, token, file, pool] = process.argv.slice(2);
const upload = new tus.Upload(fs.readFileSync(file), {
  endpoint,
  headers: { Authorization: 'Bearer ' + token },
  metadata: { filename: 'js.raw', pool },
  chunkSize: 1024 * 1024,
  retryDelays: [100, 300, 1000, 2000, 3000],
  onProgress: (sent, total) => console.log('progress ' + sent + ' ' + total),
  onSuccess: () => { console.log('success ' + upload.url); },
  onError: (err) => { console.log('error ' + err); process.exitCode = 1; },
});
upload.start();
`

// cutProxy forwards TCP connections to target and, once, after cutAfter
// bytes went upstream, closes every connection open at that moment.
type cutProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64
	up       atomic.Int64
	cut      atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
}

func newCutProxy(t *testing.T, target string, cutAfter int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cutAfter: cutAfter}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := u.Write(buf[:n]); werr != nil {
						break
					}
					if p.up.Add(int64(n)) > p.cutAfter && p.cut.CompareAndSwap(false, true) {
						p.mu.Lock()
						for _, c := range p.conns {
							c.Close()
						}
						p.mu.Unlock()
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			u.Close()
		}()
		go func() {
			io.Copy(c, u)
			c.Close()
		}()
	}
}

// TestUploadTusJSClient: the dashboard's tus client, under Node, uploads
// through a proxy that cuts every connection at about 40 %; the client
// resumes by itself and the file ends up whole.
func TestUploadTusJSClient(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: skipping the tus-js-client test (install Node.js 20 and npm to run it)")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--prefix", dir, "tus-js-client@4")
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("npm could not install tus-js-client (no registry?): skipping: %v\n%s", err, out)
	}
	c := newCluster(t)
	localPool(t, c)
	data := randomData(12*mib, 31)
	file := writeFile(t, t.TempDir(), "js.raw", data)
	script := writeFile(t, dir, "upload.js", []byte(tusScript))
	proxy := newCutProxy(t, strings.TrimPrefix(c.s.URL, "http://"), 5*mib)

	node := exec.CommandContext(ctx, "node", script, "http://"+proxy.ln.Addr().String()+"/uploads/", c.s.AdminToken, file, "local")
	node.Dir = dir
	node.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	out, err := node.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("success ")) {
		t.Fatalf("tus-js-client: %v\n%s", err, lastLines(string(out), 20))
	}
	if !proxy.cut.Load() {
		t.Error("the proxy never cut the connection")
	}
	got, err := os.ReadFile(filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), "images/js.raw"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the uploaded file differs from the original (%v)", err)
	}
	url := strings.TrimSpace(string(out[bytes.LastIndex(out, []byte("success "))+len("success "):]))
	if j := getJob(t, c.s, jobOfUpload(url)); j.GetState().String() != "JOB_STATE_SUCCEEDED" {
		t.Errorf("job %v", j)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
