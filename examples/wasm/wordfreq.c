/* Sample WASM job: counts lines, words and bytes of /in/data.txt, the five most frequent words and an FNV-1a
 * checksum, and writes them to /out/result.txt. Deterministic: no clock, no randomness, ties broken by word. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 4096
#define MAX_LEN 32

struct word { char text[MAX_LEN]; unsigned count; };
static struct word words[MAX_WORDS];
static size_t n_words;

static void add_word(const char *w) {
    for (size_t i = 0; i < n_words; i++)
        if (strcmp(words[i].text, w) == 0) { words[i].count++; return; }
    if (n_words < MAX_WORDS) { strcpy(words[n_words].text, w); words[n_words++].count = 1; }
}

static int by_count(const void *a, const void *b) {
    const struct word *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->text, y->text);
}

int main(int argc, char **argv) {
    const char *in = argc > 1 ? argv[1] : "/in/data.txt";
    FILE *f = fopen(in, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", in); return 2; }
    uint64_t hash = 1469598103934665603ULL;
    unsigned long lines = 0, n_tokens = 0, bytes = 0;
    char cur[MAX_LEN]; size_t len = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        bytes++;
        hash = (hash ^ (unsigned char)c) * 1099511628211ULL;
        if (c == '\n') lines++;
        if (isalnum(c)) {
            if (len < MAX_LEN - 1) cur[len++] = (char)tolower(c);
        } else if (len) {
            cur[len] = 0; add_word(cur); n_tokens++; len = 0;
        }
    }
    if (len) { cur[len] = 0; add_word(cur); n_tokens++; }
    fclose(f);
    qsort(words, n_words, sizeof words[0], by_count);
    FILE *out = fopen("/out/result.txt", "wb");
    if (!out) { fprintf(stderr, "cannot write /out/result.txt\n"); return 3; }
    fprintf(out, "lines %lu\nwords %lu\nbytes %lu\nfnv1a %016llx\n", lines, n_tokens, bytes,
            (unsigned long long)hash);
    for (size_t i = 0; i < n_words && i < 5; i++) fprintf(out, "top %s %u\n", words[i].text, words[i].count);
    fclose(out);
    printf("wrote /out/result.txt (%lu words)\n", n_tokens);
    return 0;
}
