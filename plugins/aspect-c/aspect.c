/* Example setr reranker plugin in C: prefers candidates whose aspect ratio is close to
 * the reference image's: score = -|log(aspect_candidate / aspect_reference)|.
 * Configuration: {} (none). Build: cc -shared -fPIC -I plugins plugins/aspect-c/aspect.c
 * -o libsetr_aspect.so -lm */
#include <math.h>
#include <stdlib.h>

#include "setr_plugin.h"

typedef struct { int unused; } Aspect;

static const char *create_error = NULL;

static int32_t aspect_create(const char *config_json, size_t config_len, void **out_handle) {
    (void)config_json;
    (void)config_len;
    Aspect *a = calloc(1, sizeof(Aspect));
    if (a == NULL) {
        create_error = "out of memory";
        return SETR_ERROR;
    }
    *out_handle = a;
    return SETR_OK;
}

static double aspect(const SetrImage *image) {
    return (double)image->width / (double)image->height;
}

static int32_t aspect_score(void *handle, const SetrQuery *query, const SetrCandidate *candidates,
                            size_t n, float *out_scores) {
    (void)handle;
    for (size_t i = 0; i < n; i++) {
        const SetrImage *img = &candidates[i].image;
        if (query->reference.pixels == NULL || img->pixels == NULL || img->height == 0 ||
            query->reference.height == 0) {
            out_scores[i] = 0.0f;
        } else {
            out_scores[i] = (float)(-fabs(log(aspect(img) / aspect(&query->reference))));
        }
    }
    return SETR_OK;
}

static const char *aspect_last_error(void *handle) {
    return handle == NULL ? create_error : NULL;
}

static void aspect_destroy(void *handle) { free(handle); }

static const SetrRerankerV1 TABLE = {
    SETR_ABI_VERSION, sizeof(SetrRerankerV1), "aspect",
    "closeness of the candidate's aspect ratio to the reference's",
    aspect_create, aspect_score, aspect_last_error, aspect_destroy,
};

const SetrRerankerV1 *setr_reranker_v1(void) { return &TABLE; }
