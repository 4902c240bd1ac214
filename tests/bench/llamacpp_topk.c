// Greedy decoding with libllama that also reports, at every step, the two largest logits.
// Written for vene's comparison against llama.cpp (tests/bench/llamacpp_compare.sh): llama-simple
// decodes greedily too but prints no logits, and a near tie explains a parted token.
//
// Usage: vene-llama-topk MODEL.gguf N_PREDICT N_THREADS PROMPT
// The prompt is tokenized with no added BOS/EOS and with special tokens parsed ("<bos>" in the
// text becomes the BOS id), which is what vene's Model::encode does.
// Prints one JSON object: {"prompt_ids": [...], "steps": [[id, logit, runner_up_id, logit], ...]}.
#include "llama.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool no_progress(float progress, void *user) {
    (void)progress;
    (void)user;
    return true;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT N_THREADS PROMPT\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int n_predict = atoi(argv[2]);
    int n_threads = atoi(argv[3]);
    const char *prompt = argv[4];

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = no_progress;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);

    int cap = (int)strlen(prompt) + 8;
    llama_token *ids = malloc(sizeof(llama_token) * (size_t)cap);
    int n_prompt = llama_tokenize(vocab, prompt, (int32_t)strlen(prompt), ids, cap, false, true);
    if (n_prompt <= 0) {
        fprintf(stderr, "tokenize failed (%d)\n", n_prompt);
        return 1;
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict + 8);
    cp.n_batch = (uint32_t)n_prompt;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }

    printf("{\"prompt_ids\": [");
    for (int i = 0; i < n_prompt; i++) printf(i ? ", %d" : "%d", ids[i]);
    printf("], \"steps\": [");

    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_batch batch = llama_batch_get_one(ids, n_prompt);
    llama_token next;
    for (int step = 0; step < n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "decode failed at step %d\n", step);
            return 1;
        }
        const float *logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[v] > logits[best]) {
                second = best;
                best = v;
            } else if (second < 0 || logits[v] > logits[second]) {
                second = v;
            }
        }
        printf("%s[%d, %.4f, %d, %.4f]", step ? ", " : "", best, logits[best], second, logits[second]);
        next = best;
        batch = llama_batch_get_one(&next, 1);
    }
    printf("]}\n");

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(ids);
    return 0;
}
