/* cmd_eval.c - `tinyllama eval`: zero-shot benchmark accuracy of an HF model
 * directory, scored as lm-evaluation-harness scores it (src/eval/eval.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "eval.h"
#include "eval_gen.h"
#include "eval_infer.h"
#include "gguf.h"
#include "ops.h"

static void help(void) {
    printf("usage: tinyllama eval --model DIR --task NAME --data FILE|DIR [options]\n\n"
           "Benchmark scores, computed exactly as EleutherAI's lm-evaluation-harness\n"
           "(HF backend) computes them: acc and acc_norm (where the harness reports it)\n"
           "for multiple choice, exact match (BBH), pass@1 (HumanEval) and F1/EM (DROP) by greedy\n"
           "generation; standard errors and counts.\n\n"
           "  --model DIR        HF Llama directory (config.json + safetensors)\n"
           "  --task NAME        hellaswag | piqa | arc_easy | arc_challenge | openbookqa |\n"
           "                     winogrande | boolq (zero-shot, a jsonl file)\n"
           "                     mmlu | cmmlu | ceval (few-shot, the release's data directory\n"
           "                     with dev/ and test/ (C-Eval: val/) CSV files per subject)\n"
           "                     bbh (3-shot, exact match; the BIG-Bench-Hard repository root\n"
           "                     with bbh/*.json and cot-prompts/*.txt) | humaneval (pass@1;\n"
           "                     HumanEval.jsonl[.gz]) | drop (3-shot, F1 and exact match;\n"
           "                     drop_dataset_dev.json, drop_dataset_train.json beside it\n"
           "                     gives the shots): greedy generation on the kv engine\n"
           "  --data FILE        the task's original release jsonl (see docs/eval.md), e.g.\n"
           "                     hellaswag_val.jsonl, piqa valid.jsonl, ARC-Easy-Test.jsonl,\n"
           "                     OpenBookQA test.jsonl, winogrande dev.jsonl, BoolQ dev.jsonl\n"
           "  --labels FILE      PIQA only: the labels file (valid-labels.lst)\n"
           "  --tokenizer FILE   tokenizer.model or tokenizer.json (default: from DIR)\n"
           "  --tokenization M   hf (default: what the harness gets from HF transformers)\n"
           "                     or spm (SentencePiece's own encoding)\n"
           "  --limit N          only the first N examples (per subject for mmlu, cmmlu, ceval)\n"
           "  --fewshot N        mmlu, cmmlu, ceval: dev examples in each prompt (default 5)\n"
           "  --python PATH      humaneval: the interpreter that runs the programs, sandboxed\n"
           "                     (default /usr/bin/python3; an absolute path)\n"
           "  --batch N          bbh, humaneval, drop: requests decoded together (default 8;\n"
           "                     the results do not depend on it)\n"
           "  --samples-per-task N  humaneval: N sampled completions per problem, pass@k by\n"
           "                     the Codex paper's unbiased estimator (default 1, greedy)\n"
           "  --temperature T    humaneval sampling temperature (default with N > 1: 0.2;\n"
           "                     0: greedy)\n"
           "  --top-p P          humaneval sampling: nucleus filter (default with N > 1: 0.95)\n"
           "  --seed S           humaneval sampling: the seed (default 0); a seed reproduces\n"
           "                     every completion, whatever --batch\n"
           "  --pass-at K,...    humaneval: the k to report pass@k for (default 1,10,100 up\n"
           "                     to N)\n"
           "  --backend B        kv (default): the inference engine (weights mapped in their\n"
           "                     file dtype) with a KV cache, each shared context computed\n"
           "                     once; fp32: the training model, full forward per request\n"
           "  --batch-tokens N   fp32 backend: padded tokens per forward micro-batch\n"
           "                     (default 512; activation memory grows with it)\n"
           "  --threads N        threads (default: the cores other processes leave free)\n"
           "  --json FILE        write the results as JSON\n"
           "  --samples          include per-example predictions and log-likelihoods in the JSON\n"
           "  --quiet            no progress bar\n"
           "  --f32-activations  kv backend, quantized GGUF or bf16 weights: fp32 activations (see\n"
           "                     `tinyllama generate --help`)\n");
}

static void progress(void *user, long done, long total, double elapsed) {
    (void)user;
    const int W = 30;
    int fill = total ? (int)(W * done / total) : W;
    double eta = done ? elapsed * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\r[%.*s%*s] %ld/%ld requests  %.0fs elapsed  ETA %.0fs ", fill,
            "##############################", W - fill, "", done, total, elapsed, eta);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Per subject (and MMLU's categories): n and acc, as the harness's table lists them. */
static void print_subjects(const tl_eval_task *t, const tl_eval_result *r) {
    printf("| %-40s | %5s | %7s | %8s |\n", "subject", "n", "acc", "stderr");
    printf("|------------------------------------------|-------|---------|----------|\n");
    for (int s = 0; s < r->n_subjects; s++)
        printf("| %-40s | %5d | %7.4f | %8.4f |\n", t->subjects[s], r->subj_n[s], r->subj_acc[s],
               r->subj_acc_stderr[s]);
    for (int g = 0; g < r->n_groups; g++)
        if (r->group_n[g] > 0)
            printf("| %-40s | %5d | %7.4f | %8.4f |\n", tl_task_group_name(t->kind, g), r->group_n[g],
                   r->group_acc[g], r->group_acc_stderr[g]);
    printf("\n");
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* BBH, HumanEval and DROP: greedy generation on the kv engine, scored as the harness does. */
static int run_generation(tl_task_kind kind, const char *model, const char *data, long limit, const tl_tokenizer *tok,
                          const char *python, const char *json_path, int samples, int quiet, int use_kv,
                          tl_gen_eval_opts o) {
    tl_error err;
    if (!use_kv) {
        cli_error("eval", "%s generates text: only --backend kv (the inference engine) does that", tl_task_name(kind));
        return 2;
    }
    if (kind == TL_TASK_HUMANEVAL && python[0] != '/') {
        cli_error("eval", "--python must be an absolute path (the sandbox passes no PATH search), got '%s'", python);
        return 2;
    }
    tl_gen_task *task = tl_gen_task_load(kind, data, limit, tok, &err);
    if (!task) {
        cli_error("eval", "%s", err.msg);
        return 1;
    }
    tl_infer_model im;
    if (tl_infer_load_weights_only(&im, model, &err)) {
        cli_error("eval", "%s", err.msg);
        tl_gen_task_free(task);
        return 1;
    }
    if (!quiet) {
        char how[96] = "greedy";
        if (o.temperature > 0)
            snprintf(how, sizeof how, "%d samples each (temperature %g, top-p %g, seed %llu)",
                     o.n_samples > 1 ? o.n_samples : 1, o.temperature, o.top_p, (unsigned long long)o.seed);
        fprintf(stderr, "%s: %d examples%s, %s, at most %d new tokens each, %d requests decoded together\n",
                tl_task_name(kind), task->n_docs,
                kind == TL_TASK_HUMANEVAL ? " (generation, then the programs in the sandbox)" : "", how,
                task->max_gen_toks, o.batch);
    }
    o.python = python;
    o.progress = quiet ? NULL : progress;
    tl_gen_result r;
    int rc = tl_gen_run(task, &im, tok, &o, &r, &err);
    tl_infer_free(&im);
    if (rc) {
        cli_error("eval", "%s", err.msg);
        tl_gen_task_free(task);
        return 1;
    }
    const char *metric = tl_gen_metric_name(kind);
    if (kind == TL_TASK_BBH) {
        printf("| %-40s | %5s | %11s | %8s |\n", "subject", "n", metric, "stderr");
        printf("|------------------------------------------|-------|-------------|----------|\n");
        for (int s = 0; s < task->n_subjects; s++)
            printf("| %-40s | %5d | %11.4f | %8.4f |\n", task->subjects[s], r.subj_n[s], r.subj_metric[s],
                   r.subj_stderr[s]);
        printf("\n");
    }
    printf("| %-13s | %5s | %-11s | %7s | %8s |\n", "task", "n", "metric", "value", "stderr");
    printf("|---------------|-------|-------------|---------|----------|\n");
    printf("| %-13s | %5d | %-11s | %7.4f | %8.4f |\n", tl_task_name(kind), r.n, metric, r.metric, r.metric_stderr);
    if (kind == TL_TASK_DROP)
        printf("| %-13s | %5d | %-11s | %7.4f | %8.4f |\n", tl_task_name(kind), r.n, "em", r.em_metric, r.em_stderr);
    for (int q = 0; q < r.n_pass_k; q++)
        if (r.pass_k[q] != 1) {
            char name[32];
            snprintf(name, sizeof name, "pass@%d", r.pass_k[q]);
            printf("| %-13s | %5d | %-11s | %7.4f | %8s |\n", tl_task_name(kind), r.n, name, r.pass_at[q], "");
        }
    printf("(%.1f s; %ld tokens generated, %.1f tokens/s; %ld context tokens run", r.seconds, r.tokens_generated,
           r.seconds > 0 ? r.tokens_generated / (r.seconds - r.exec_seconds) : 0.0, r.tokens_prefilled);
    if (kind == TL_TASK_HUMANEVAL) printf("; sandbox: %s, %.1f s", r.isolation, r.exec_seconds);
    printf(")\n");
    if (json_path) {
        char *js = tl_gen_result_json(task, &r, samples);
        if (!js) rc = tl_fail(&err, "out of memory");
        else {
            size_t n = strlen(js);
            js[n] = '\n';
            rc = tl_write_file_atomic(json_path, js, n + 1, &err);
            free(js);
        }
        if (rc) cli_error("eval", "%s", err.msg);
    }
    tl_gen_result_free(&r);
    tl_gen_task_free(task);
    return rc ? 1 : 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *task_name = NULL, *data = NULL, *labels = NULL, *tok_path = NULL;
    const char *json_path = NULL, *mode_s = "hf", *backend_s = "kv", *python = "/usr/bin/python3";
    long limit = 0, batch_tokens = 512, threads = 0, fewshot = -1, batch = 8, n_samples = 1, seed = 0;
    double temperature = -1, top_p = -1;
    const char *pass_at = NULL;
    int samples = 0, quiet = 0, f32_act = 0;
    const cli_option opts[] = {
        CLI_OPT_FLAG("--samples", &samples),
        CLI_OPT_FLAG("--quiet", &quiet),
        CLI_OPT_FLAG("--f32-activations", &f32_act),
        CLI_OPT_STR("--model", &model),
        CLI_OPT_STR("--task", &task_name),
        CLI_OPT_STR("--data", &data),
        CLI_OPT_STR("--labels", &labels),
        CLI_OPT_STR("--tokenizer", &tok_path),
        CLI_OPT_STR("--tokenization", &mode_s),
        CLI_OPT_STR("--backend", &backend_s),
        CLI_OPT_STR("--json", &json_path),
        CLI_OPT_STR("--python", &python),
        CLI_OPT_INT("--limit", &limit, 1, 1000000000L),
        CLI_OPT_INT("--batch-tokens", &batch_tokens, 1, 1L << 24),
        CLI_OPT_INT("--threads", &threads, 1, 1024),
        CLI_OPT_INT("--fewshot", &fewshot, 0, 64),
        CLI_OPT_INT("--batch", &batch, 1, 256),
        CLI_OPT_INT("--samples-per-task", &n_samples, 1, 100000),
        CLI_OPT_DOUBLE("--temperature", &temperature),
        CLI_OPT_DOUBLE("--top-p", &top_p),
        CLI_OPT_INT("--seed", &seed, 0, 0x7fffffffffffffffL),
        CLI_OPT_STR("--pass-at", &pass_at),
    };
    int prc = cli_parse("eval", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (prc == CLI_HELP) {
        help();
        return 0;
    }
    if (prc) return prc;
    if (!model || !task_name || !data) {
        cli_error("eval", "--model, --task and --data are required (see --help)");
        return 2;
    }
    cli_threads("eval", threads);
    tl_error err;
    tl_task_kind kind;
    if (tl_task_from_name(task_name, &kind, &err)) {
        cli_error("eval", "%s", err.msg);
        return 2;
    }
    if (kind == TL_TASK_PIQA && !labels) {
        cli_error("eval", "piqa needs --labels FILE (the release's valid-labels.lst)");
        return 2;
    }
    if (kind != TL_TASK_PIQA && labels) {
        cli_error("eval", "--labels is only for piqa");
        return 2;
    }
    const int multi = tl_task_is_multi_subject(kind);
    if (fewshot >= 0 && !multi) {
        cli_error("eval", "--fewshot is only for mmlu, cmmlu and ceval (the other tasks are zero-shot)");
        return 2;
    }
    tl_eval_tok_mode mode;
    if (!strcmp(mode_s, "hf")) mode = TL_EVAL_TOK_HF;
    else if (!strcmp(mode_s, "spm")) mode = TL_EVAL_TOK_SPM;
    else {
        cli_error("eval", "--tokenization must be hf or spm");
        return 2;
    }
    int use_kv;
    if (!strcmp(backend_s, "kv")) use_kv = 1;
    else if (!strcmp(backend_s, "fp32")) use_kv = 0;
    else {
        cli_error("eval", "--backend must be kv or fp32");
        return 2;
    }
    /* a GGUF file (any regular file): its own tokenizer, and only the kv engine reads it */
    const int gguf = file_exists(model);
    if (gguf && !use_kv) {
        cli_error("eval", "--backend fp32 reads HF directories only; %s is a file (GGUF): use --backend kv", model);
        return 2;
    }
    char tpath[4096];
    if (!tok_path && !gguf) {
        snprintf(tpath, sizeof tpath, "%s/tokenizer.model", model);
        if (!file_exists(tpath)) snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model);
        if (!file_exists(tpath)) {
            cli_error("eval", "%s has no tokenizer.model or tokenizer.json; give --tokenizer FILE", model);
            return 2;
        }
        tok_path = tpath;
    }
    tl_tokenizer *tok = NULL;
    tl_gguf *tg = NULL; /* the GGUF file the tokenizer comes from (its pieces stay in the map) */
    if (tok_path) {
        tok = tl_tokenizer_load(tok_path, &err);
    } else {
        tg = tl_gguf_open(model, &err);
        tok = tg ? tl_tokenizer_from_gguf(tg, NULL, &err) : NULL;
    }
    if (!tok) {
        cli_error("eval", "%s", err.msg);
        tl_gguf_close(tg);
        return 1;
    }
    /* HumanEval's sampling: the harness's humaneval_64 setting unless told */
    const int sampling_opts = n_samples > 1 || temperature >= 0 || top_p >= 0 || pass_at;
    if (sampling_opts && kind != TL_TASK_HUMANEVAL) {
        cli_error("eval", "--samples-per-task, --temperature, --top-p and --pass-at are for humaneval");
        return 2;
    }
    if (temperature < 0) temperature = n_samples > 1 ? 0.2 : 0;
    if (top_p < 0) top_p = n_samples > 1 ? 0.95 : 1;
    if (!isfinite(temperature) || !isfinite(top_p) || top_p <= 0 || top_p > 1) {
        cli_error("eval", "--temperature must be >= 0 and --top-p in (0, 1]");
        return 2;
    }
    if (n_samples > 1 && temperature == 0) {
        cli_error("eval", "--samples-per-task %ld with --temperature 0 would repeat one greedy completion", n_samples);
        return 2;
    }
    tl_gen_eval_opts go = {.batch = (int)batch, .n_samples = (int)n_samples, .temperature = (float)temperature,
                           .top_p = (float)top_p, .seed = (uint64_t)seed};
    for (const char *p = pass_at; p && *p;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > n_samples || (*end && *end != ',') || go.n_pass_k == 16) {
            cli_error("eval", "--pass-at takes up to 16 comma-separated k in 1..%ld (--samples-per-task), got '%s'",
                      n_samples, pass_at);
            return 2;
        }
        go.pass_k[go.n_pass_k++] = (int)k;
        p = *end ? end + 1 : end;
    }
    if (tl_task_is_generation(kind)) {
        int grc = run_generation(kind, model, data, limit, tok, python, json_path, samples, quiet, use_kv, go);
        tl_tokenizer_free(tok);
        tl_gguf_close(tg);
        return grc;
    }
    tl_eval_task *task = multi && fewshot >= 0
                             ? tl_eval_task_load_fewshot(kind, data, (int)fewshot, limit, tok, mode, &err)
                             : tl_eval_task_load(kind, data, labels, limit, tok, mode, &err);
    tl_tokenizer_free(tok);
    tl_gguf_close(tg);
    if (!task) {
        cli_error("eval", "%s", err.msg);
        return 1;
    }
    tl_model m;
    tl_infer_model im;
    if (use_kv ? tl_infer_load_weights_only(&im, model, &err) : tl_model_load_hf(model, &m, &err)) {
        cli_error("eval", "%s", err.msg);
        tl_eval_task_free(task);
        return 1;
    }
    if (use_kv) tl_infer_set_f32_activations(&im, f32_act);
    if (!quiet)
        fprintf(stderr, "%s: %d examples%s%.0d%s, %d requests (%s backend)\n", tl_task_name(kind), task->n_docs,
                multi ? " in " : "", multi ? task->n_subjects : 0, multi ? " subjects" : "", task->n_reqs,
                use_kv ? "kv" : "fp32");
    tl_eval_opts o = {.max_tokens = (int)batch_tokens, .chunk = 64,
                      .progress = quiet ? NULL : progress, .progress_user = NULL};
    tl_eval_result r;
    int rc;
    if (use_kv) {
        tl_eval_infer_backend *b = tl_eval_infer_backend_create(&im, &err);
        rc = b ? 0 : -1;
        if (b) {
            tl_eval_backend be = tl_eval_infer_backend_iface(b);
            rc = tl_eval_run_backend(task, &be, &o, &r, &err);
            tl_eval_infer_backend_free(b);
        }
        tl_infer_free(&im);
    } else {
        rc = tl_eval_run(task, &m, &o, &r, &err);
        tl_model_free(&m);
    }
    if (rc) {
        cli_error("eval", "%s", err.msg);
        tl_eval_task_free(task);
        return 1;
    }
    if (multi) print_subjects(task, &r);
    printf("| %-13s | %5s | %-8s | %7s | %8s |\n", "task", "n", "metric", "value", "stderr");
    printf("|---------------|-------|----------|---------|----------|\n");
    printf("| %-13s | %5d | %-8s | %7.4f | %8.4f |\n", tl_task_name(kind), r.n, "acc", r.acc, r.acc_stderr);
    if (r.has_acc_norm)
        printf("| %-13s | %5d | %-8s | %7.4f | %8.4f |\n", "", r.n, "acc_norm", r.acc_norm,
               r.acc_norm_stderr);
    if (multi)
        printf("(%d-shot; acc is the mean over all %d questions, as the harness reports it; the mean of\n"
               " the %d subjects' acc is %.4f)\n", task->n_shot, r.n, r.n_subjects, r.acc_macro);
    printf("(%.1f s, %.1f requests/s)\n", r.seconds, r.seconds > 0 ? task->n_reqs / r.seconds : 0.0);
    if (json_path) {
        char *js = tl_eval_result_json(task, &r, samples);
        if (!js) rc = tl_fail(&err, "out of memory");
        else {
            size_t n = strlen(js);
            js[n] = '\n'; /* replace the NUL with a newline for the file */
            rc = tl_write_file_atomic(json_path, js, n + 1, &err);
            free(js);
        }
        if (rc) cli_error("eval", "%s", err.msg);
    }
    tl_eval_result_free(&r);
    tl_eval_task_free(task);
    return rc ? 1 : 0;
}
