/*
 * cg_topk.h -- bounded heaps for top-k selection.
 *
 * Ranking is a strict total order on (key, row): a higher key is better, and
 * on equal keys the lower row index is better.  key = score for dot and
 * cosine, -score for l2; a NaN score gets key -inf (ranked with the worst).
 * Because the order is total, the k best rows of a set do not depend on how
 * the set was split among threads, so merged results are deterministic.
 *
 * A heap holds at most cap entries with the worst at the root.  Its storage
 * grows on demand (doubling), so a large k costs memory only for the rows a
 * thread actually saw.
 */
#ifndef CG_TOPK_H
#define CG_TOPK_H

#include <stdlib.h>
#include "cg_common.h"

typedef struct cg_entry {
    float key;
    float score;
    int64_t row;
} cg_entry;

typedef struct cg_heap {
    cg_entry *e;
    int64_t len, alloc, cap;
} cg_heap;

/* a ranks strictly better than b */
CG_INLINE int cg_better(float ka, int64_t ra, float kb, int64_t rb) {
    return ka > kb || (ka == kb && ra < rb);
}

static void cg_heap_sift_down(cg_entry *e, int64_t len, int64_t i) {
    cg_entry x = e[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= len) break;
        /* pick the worse child */
        if (c + 1 < len && cg_better(e[c].key, e[c].row, e[c + 1].key, e[c + 1].row)) c++;
        if (!cg_better(x.key, x.row, e[c].key, e[c].row)) break;
        e[i] = e[c];
        i = c;
    }
    e[i] = x;
}

static void cg_heap_sift_up(cg_entry *e, int64_t i) {
    cg_entry x = e[i];
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        /* parent must be worse than (or equal to) the child */
        if (!cg_better(e[p].key, e[p].row, x.key, x.row)) break;
        e[i] = e[p];
        i = p;
    }
    e[i] = x;
}

/* Offer a candidate.  Returns CG_OK or CG_ENOMEM. */
CG_INLINE int cg_heap_push(cg_heap *h, float key, float score, int64_t row) {
    if (h->len < h->cap) {
        if (h->len == h->alloc) {
            int64_t na = h->alloc ? 2 * h->alloc : 16;
            if (na > h->cap) na = h->cap;
            cg_entry *ne = (cg_entry *)realloc(h->e, (size_t)na * sizeof(cg_entry));
            if (!ne) return CG_ENOMEM;
            h->e = ne;
            h->alloc = na;
        }
        h->e[h->len].key = key;
        h->e[h->len].score = score;
        h->e[h->len].row = row;
        cg_heap_sift_up(h->e, h->len);
        h->len++;
        return CG_OK;
    }
    if (cg_better(key, row, h->e[0].key, h->e[0].row)) {
        h->e[0].key = key;
        h->e[0].score = score;
        h->e[0].row = row;
        cg_heap_sift_down(h->e, h->len, 0);
    }
    return CG_OK;
}

/* qsort comparator: best first */
static int cg_entry_cmp(const void *pa, const void *pb) {
    const cg_entry *a = (const cg_entry *)pa, *b = (const cg_entry *)pb;
    if (cg_better(a->key, a->row, b->key, b->row)) return -1;
    if (cg_better(b->key, b->row, a->key, a->row)) return 1;
    return 0;
}

#endif /* CG_TOPK_H */
