/* setr reranker plugin ABI, version 1 (C side of crates/setr-plugin-api).
 *
 * A plugin is a shared library exporting
 *     const SetrRerankerV1 *setr_reranker_v1(void);
 * returning a pointer to a static table. The host reads abi_version and struct_size
 * first (they never move), refuses other versions and smaller tables, then reads the
 * name, then calls create() with the plugin's JSON configuration.
 *
 * Ownership: every buffer the host passes is owned by the host and valid for the call
 * only. The handle, the name/description and the strings last_error() returns are owned
 * by the plugin. score() is never called concurrently on one handle. The host fills
 * out_scores with NaN before calling score(): write one finite score per candidate.
 * Stability: fields are only appended; changing one makes setr_reranker_v2. */
#ifndef SETR_PLUGIN_H
#define SETR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SETR_ABI_VERSION 1u
#define SETR_OK 0
#define SETR_ERROR 1

/* A borrowed RGB8 image: 3 * width * height bytes, row-major; pixels NULL when absent. */
typedef struct SetrImage {
    uint32_t width;
    uint32_t height;
    const uint8_t *pixels;
} SetrImage;

typedef struct SetrQuery {
    const char *text;              /* UTF-8, NUL-terminated */
    size_t text_len;               /* bytes, without the NUL */
    SetrImage reference;           /* absent for text-only queries */
    const float *reference_embedding; /* embedding_dim floats, or NULL */
    size_t embedding_dim;          /* 0 when there are no embeddings */
} SetrQuery;

typedef struct SetrCandidate {
    uint64_t id;
    SetrImage image;               /* absent when the host could not read it */
    const float *embedding;        /* SetrQuery.embedding_dim floats, or NULL */
    float coarse_score;
    const char *metadata_json;     /* JSON text, NUL-terminated ("null" when none) */
    size_t metadata_len;
} SetrCandidate;

typedef struct SetrRerankerV1 {
    uint32_t abi_version;          /* SETR_ABI_VERSION */
    uint32_t struct_size;          /* sizeof(SetrRerankerV1) */
    const char *name;              /* unique, static */
    const char *description;       /* static */
    /* Build an instance; on failure return SETR_ERROR, last_error(NULL) says why. */
    int32_t (*create)(const char *config_json, size_t config_len, void **out_handle);
    /* Write n finite scores (larger = better) into out_scores. */
    int32_t (*score)(void *handle, const SetrQuery *query, const SetrCandidate *candidates,
                     size_t n, float *out_scores);
    /* Message of the handle's last failure (NULL handle: last create failure), or NULL. */
    const char *(*last_error)(void *handle);
    void (*destroy)(void *handle);
} SetrRerankerV1;

const SetrRerankerV1 *setr_reranker_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* SETR_PLUGIN_H */
