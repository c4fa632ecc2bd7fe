/* Misbehaving WASM task for the sandbox tests; argv[1] picks the misbehaviour:
 *   echo            copy /in/data.txt to /out/copy.txt and stdout
 *   busy            spin forever (fuel or epoch must stop it)
 *   hog             allocate 1 MiB blocks until malloc fails, then exit 3
 *   bigout MIB      write MIB MiB to /out/big.bin (exit 4 when a write fails)
 *   escape          try to read/write outside the preopens; prints one line per attempt, exit 0
 *   chatty N        "start" on stderr, then N numbered 100-byte lines on stdout (unbuffered), exit 0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *volatile hog_list;

static void attempt(const char *what, const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    printf("%s %s %s\n", what, path, f ? "OPEN" : "denied");
    if (f) fclose(f);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "echo";
    if (strcmp(mode, "busy") == 0) {
        volatile unsigned long x = 0;
        for (;;) x++;
    }
    if (strcmp(mode, "hog") == 0) {
        size_t total = 0;
        for (;;) {
            char *p = malloc(1 << 20);
            if (!p) { fprintf(stderr, "malloc failed after %zu MiB\n", total); return 3; }
            memset(p, 1, 1 << 20);
            *(char **)p = hog_list;  /* keep every block reachable, or clang drops the allocation */
            hog_list = p;
            total++;
        }
    }
    if (strcmp(mode, "bigout") == 0) {
        long mib = argc > 2 ? atol(argv[2]) : 8;
        static char block[1 << 20];
        memset(block, 'x', sizeof block);
        FILE *f = fopen("/out/big.bin", "wb");
        if (!f) return 5;
        for (long i = 0; i < mib; i++)
            if (fwrite(block, 1, sizeof block, f) != sizeof block) { fprintf(stderr, "write failed\n"); return 4; }
        if (fclose(f) != 0) { fprintf(stderr, "close failed\n"); return 4; }
        return 0;
    }
    if (strcmp(mode, "chatty") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 1000;
        setvbuf(stdout, NULL, _IONBF, 0);  /* one write per line: as many writes as a chatty task makes */
        fputs("start\n", stderr);
        for (long i = 0; i < n; i++) printf("%09ld %089d\n", i, 0);
        return 0;
    }
    if (strcmp(mode, "escape") == 0) {
        attempt("read", "/etc/passwd", "r");
        attempt("read", "/in/../../etc/passwd", "r");
        attempt("read", "/out/../../etc/hostname", "r");
        attempt("write", "/in/new.txt", "w");
        attempt("write", "/in/data.txt", "a");
        attempt("write", "/tmp/x.txt", "w");
        attempt("write", "/out/ok.txt", "w");
        return 0;
    }
    FILE *in = fopen("/in/data.txt", "rb");
    FILE *out = fopen("/out/copy.txt", "wb");
    if (!in || !out) { fprintf(stderr, "open failed: %s\n", strerror(errno)); return 2; }
    int c;
    while ((c = fgetc(in)) != EOF) { fputc(c, out); putchar(c); }
    fclose(in); fclose(out);
    return 0;
}
