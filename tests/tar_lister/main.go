// Command tar-lister prints what Go's archive/tar reads in each tar named on
// its command line, one line per entry, for the differential test
// tests/it/oci/tar_diff.rs. Standard library only: the test builds it offline.
//
// Output, per archive:
//
//	file <path>
//	entry t=<type> name=<hex> link=<hex> size=<n> mode=<n> uid=<n> gid=<n>
//	      mtime=<sec>.<nsec> dev=<major>:<minor> pax=<hexkey>:<hexvalue>,...
//	      sha256=<hex of the data, or "skip" past 256 MiB>
//	error <message>   (Next or a data read failed; nothing more is read)
//	end               (the archive ended cleanly)
//
// Strings are hex so that any byte, NUL and newline included, is exact.
package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

const maxHashed = 256 << 20

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, path := range os.Args[1:] {
		fmt.Fprintf(out, "file %s\n", path)
		list(out, path)
	}
}

func list(out *bufio.Writer, path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(out, "error open: %v\n", err)
		return
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			fmt.Fprintln(out, "end")
			return
		}
		if err != nil {
			fmt.Fprintf(out, "error next: %q\n", err.Error())
			return
		}
		sum := "skip"
		if hdr.Size <= maxHashed {
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				fmt.Fprintf(out, "error data: %q\n", err.Error())
				return
			}
			sum = hex.EncodeToString(h.Sum(nil))
		}
		keys := make([]string, 0, len(hdr.PAXRecords))
		for k := range hdr.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pax := make([]string, 0, len(keys))
		for _, k := range keys {
			pax = append(pax, hex.EncodeToString([]byte(k))+":"+hex.EncodeToString([]byte(hdr.PAXRecords[k])))
		}
		paxField := strings.Join(pax, ",")
		if paxField == "" {
			paxField = "-"
		}
		fmt.Fprintf(out, "entry t=%d name=%s link=%s size=%d mode=%d uid=%d gid=%d mtime=%d.%09d dev=%d:%d pax=%s sha256=%s\n",
			hdr.Typeflag,
			hex.EncodeToString([]byte(hdr.Name)),
			hex.EncodeToString([]byte(hdr.Linkname)),
			hdr.Size, hdr.Mode, hdr.Uid, hdr.Gid,
			hdr.ModTime.Unix(), hdr.ModTime.Nanosecond(),
			hdr.Devmajor, hdr.Devminor,
			paxField, sum)
	}
}
