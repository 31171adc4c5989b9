/* gguf_vocab.h -- a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) as GGUF tokenizer.ggml.* metadata.
 * Follows llama.cpp's converter: a BPE with byte fallback is "llama" (sentencepiece-style), a byte-level BPE "gpt2".
 *
 * What is written (all under tokenizer.ggml.):
 *   model          "llama", "gpt2", or "none" when there is no tokenizer.json
 *   tokens         one string per id 0..n_vocab-1 ("[PADi]" for ids no token has)
 *   scores         "llama" only: -(rank of the merge that makes the token), 0
 *                  for tokens no merge makes: llama.cpp's SPM tokenizer merges
 *                  the highest score first, which is BPE's merge order
 *   token_type     1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
 *   merges         "gpt2" only: "left right" per merge, in rank order
 *   pre            "gpt2" only: "gpt-2" for GPT-2, "llama-bpe" for LLaMA 3's
 *                  pre-tokenizer regex, else "default"
 *   bos/eos/unknown/padding_token_id, add_bos_token, add_eos_token,
 *   add_space_prefix ("llama": whether the normalizer prepends U+2581)
 * Every input byte is untrusted: the files are size-capped before parsing,
 * ids are checked against n_vocab, and work is linear in the vocabulary.
 */
#ifndef CKPTFS_GGUF_VOCAB_H
#define CKPTFS_GGUF_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"
#include "ckptfs/gguf.h"

struct cJSON;

/* Largest tokenizer.json accepted (Llama 3's is 9 MB, Gemma's 34 MB). */
#define GGUF_VOCAB_MAX_BYTES (64u << 20)
#define GGUF_VOCAB_VALUES_BASE 65536u
#define GGUF_VOCAB_VALUES_PER_TOKEN 16u
#define GGUF_VOCAB_DEPTH 32u

/* Add the tokenizer metadata for a model of n_vocab embedding rows.
 * tok/tok_len: tokenizer.json (NULL: model "none"); cfg/cfg_len:
 * tokenizer_config.json (may be NULL); config: config.json (for
 * bos/eos_token_id when tokenizer_config.json does not name them; may be
 * NULL); arch: the GGUF architecture ("gpt2" picks pre "gpt-2"); path and
 * cfg_path name the two files in messages. tokenizer.json is read by the
 * streaming scanner (its vocabulary and merges straight into one arena, its
 * few small members through cJSON), tokenizer_config.json pre-scanned before
 * cJSON builds a tree (64-80 bytes per value), both within limits:
 * tokenizer.json may hold GGUF_VOCAB_VALUES_PER_TOKEN values per embedding
 * row (a vocabulary entry, a merge as [left, right], an added token's few
 * members) plus GGUF_VOCAB_VALUES_BASE; tokenizer_config.json, config.json's
 * bound. A document the scanner refuses gets json_check's message.
 * Returns 0 or a negative errno with err set. */
int gguf_vocab_add(struct gguf_kv *kv, const char *tok, size_t tok_len, const char *cfg, size_t cfg_len,
		   const struct cJSON *config, uint64_t n_vocab, const char *arch, const char *path,
		   const char *cfg_path, struct ckpt_err *err);

#endif
