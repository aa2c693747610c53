/* train.c - the training loop. */
#include "train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tl_trainer {
    tl_model *m;
    tl_dataset *train, *val;
    tl_train_opts o;
    tl_engine *eng;
    tl_train_state st;
    int *tokens, *inputs, *targets;
    char log_path[4096];
    FILE *log;
};

tl_trainer *tl_trainer_create(tl_model *m, tl_dataset *train, tl_dataset *val, const tl_train_opts *o,
                              tl_error *err) {
    if (o->batch < 1 || o->seq_len < 1 || o->accum < 1 || o->steps < 1) {
        tl_fail(err, "batch, sequence length, accumulation and steps must be positive");
        return NULL;
    }
    /* ---- mixture (src/mixture.h): stands in for the train dataset ---- */
    if (o->mixture) {
        if (!o->mixture->finished) {
            tl_fail(err, "the data mixture is not finished");
            return NULL;
        }
        if (o->seq_len > o->mixture->seq_len) {
            tl_fail(err, "sequence length %d is longer than the mixture sources' %d", o->seq_len, o->mixture->seq_len);
            return NULL;
        }
        for (int i = 0; i < o->mixture->n; i++)
            if (tl_dataset_check_vocab(&o->mixture->src[i].ds, m->cfg.vocab_size, err)) return NULL;
    } else if (!train) {
        tl_fail(err, "no training data");
        return NULL;
    } else
    /* ---- end mixture ---- */
    if (o->seq_len > train->seq_len) {
        tl_fail(err, "sequence length %d is longer than the training shards' %d", o->seq_len, train->seq_len);
        return NULL;
    }
    if (val && o->seq_len > val->seq_len) {
        tl_fail(err, "sequence length %d is longer than the validation shards' %d", o->seq_len, val->seq_len);
        return NULL;
    }
    if ((train && tl_dataset_check_vocab(train, m->cfg.vocab_size, err)) ||
        (val && tl_dataset_check_vocab(val, m->cfg.vocab_size, err)))
        return NULL;
    if (o->opt.warmup_steps < 0 || o->opt.decay_steps < o->opt.warmup_steps) {
        tl_fail(err, "decay steps (%ld) must be at least the warmup steps (%ld)", o->opt.decay_steps, o->opt.warmup_steps);
        return NULL;
    }
    tl_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    t->m = m;
    t->train = train;
    t->val = val;
    t->o = *o;
    size_t n = m->n_params, B = (size_t)o->batch, T = (size_t)o->seq_len;
    t->st.m = tl_alloc(n * sizeof(float));
    t->st.v = tl_alloc(n * sizeof(float));
    t->st.n_params = n;
    t->tokens = malloc(sizeof(int) * B * (T + 1));
    t->inputs = malloc(sizeof(int) * B * T);
    t->targets = malloc(sizeof(int) * B * T);
    if (!t->st.m || !t->st.v || !t->tokens || !t->inputs || !t->targets) {
        tl_fail(err, "out of memory allocating training state for %zu parameters", n);
        tl_trainer_free(t);
        return NULL;
    }
    t->eng = o->engine ? o->engine(m, t->st.m, t->st.v, o->batch, o->seq_len, o->engine_user, err)
                       : tl_engine_cpu_create(m, t->st.m, t->st.v, o->batch, o->seq_len, err);
    if (!t->eng) {
        tl_trainer_free(t);
        return NULL;
    }
    if (o->mixture) { /* mixture */
        tl_mixture_seek(o->mixture, 0, NULL);
    } else {
        tl_dataset_set_order(train, o->shuffle, o->seed);
        tl_dataset_seek(train, 0, 0, NULL);
    }
    tl_rng_seed(&t->st.rng, o->seed);
    if (o->log_path)
        snprintf(t->log_path, sizeof t->log_path, "%s", o->log_path);
    else
        snprintf(t->log_path, sizeof t->log_path, "%s/log.jsonl", o->out_dir);
    return t;
}

void tl_trainer_free(tl_trainer *t) {
    if (!t) return;
    if (t->log) fclose(t->log);
    if (t->eng) t->eng->ops->free(t->eng);
    tl_free(t->st.m);
    tl_free(t->st.v);
    free(t->tokens);
    free(t->inputs);
    free(t->targets);
    free(t);
}

long tl_trainer_step(const tl_trainer *t) { return (long)t->st.step; }

size_t tl_trainer_memory_bytes(const tl_trainer *t) {
    return t->eng->ops->memory_bytes(t->eng) + 3 * t->m->n_params * sizeof(float);
}

/* The settings that decide which samples each step sees: a resumed run must
 * use the same ones to continue bit-identically. */
static char *args_json(const tl_trainer *t) {
    const tl_train_opts *o = &t->o;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "batch", o->batch);
    cJSON_AddNumberToObject(r, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(r, "accum", o->accum);
    cJSON_AddNumberToObject(r, "steps", (double)o->steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(r, "seed", seed);
    cJSON_AddBoolToObject(r, "shuffle", o->shuffle);
    cJSON_AddNumberToObject(r, "lr", o->opt.lr);
    cJSON_AddNumberToObject(r, "min_lr", o->opt.min_lr);
    cJSON_AddNumberToObject(r, "warmup_steps", (double)o->opt.warmup_steps);
    cJSON_AddNumberToObject(r, "decay_steps", (double)o->opt.decay_steps);
    cJSON_AddNumberToObject(r, "beta1", o->opt.beta1);
    cJSON_AddNumberToObject(r, "beta2", o->opt.beta2);
    cJSON_AddNumberToObject(r, "eps", o->opt.eps);
    cJSON_AddNumberToObject(r, "weight_decay", o->opt.weight_decay);
    cJSON_AddNumberToObject(r, "clip", o->opt.clip);
    if (o->mixture) { /* mixture: its sources, weights and sizes decide the stream */
        char *mix = tl_mixture_describe(o->mixture);
        cJSON_AddItemToObject(r, "mixture", cJSON_Parse(mix));
        free(mix);
        double total = 0;
        for (int i = 0; i < o->mixture->n; i++) total += (double)o->mixture->src[i].ds.n_samples;
        cJSON_AddNumberToObject(r, "train_samples", total);
    } else {
        cJSON_AddNumberToObject(r, "train_samples", (double)t->train->n_samples);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

static int check_resume_args(const tl_trainer *t, const char *dir, tl_error *err) {
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/train_args.json", dir);
    if (tl_read_file(path, 1 << 20, &text, &len, err)) return -1;
    cJSON *saved = cJSON_Parse(text);
    free(text);
    char *mine_s = args_json(t);
    cJSON *mine = cJSON_Parse(mine_s);
    free(mine_s);
    int rc = 0;
    if (!saved) rc = tl_fail(err, "%s: malformed JSON", path);
    static const char *const keys[] = {"batch", "seq_len", "accum", "seed", "shuffle", "train_samples", "mixture"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !rc; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(saved, keys[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(mine, keys[i]);
        if (!strcmp(keys[i], "mixture") && !a && !b) continue; /* neither run used a mixture */
        if (!a || !b || !cJSON_Compare(a, b, 1)) {
            char *as = a ? cJSON_PrintUnformatted(a) : NULL, *bs = b ? cJSON_PrintUnformatted(b) : NULL;
            rc = tl_fail(err, "%s: the checkpoint was trained with %s=%s but this run has %s=%s; resume with the same "
                              "setting (it decides which data each step sees)",
                         dir, keys[i], as ? as : "(missing)", keys[i], bs ? bs : "(missing)");
            free(as);
            free(bs);
        }
    }
    cJSON_Delete(saved);
    cJSON_Delete(mine);
    return rc;
}

/* Drops log lines of steps after the checkpoint (written by the interrupted run). */
static void truncate_log(const char *path, long step) {
    char *text;
    size_t len;
    if (tl_read_file(path, (size_t)1 << 30, &text, &len, NULL)) return;
    char *out = malloc(len + 1);
    size_t pos = 0;
    for (char *line = text; out && line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t l = nl ? (size_t)(nl - line) + 1 : (size_t)(text + len - line);
        char *sp = strstr(line, "\"step\":");
        long s = sp && sp < line + l ? strtol(sp + 7, NULL, 10) : 0;
        if (nl && s <= step) {
            memcpy(out + pos, line, l);
            pos += l;
        }
        line += l;
    }
    if (out) tl_write_file_atomic(path, out, pos, NULL);
    free(out);
    free(text);
}

int tl_trainer_resume(tl_trainer *t, const char *ckpt_dir, tl_error *err) {
    char path[4200];
    if (check_resume_args(t, ckpt_dir, err)) return -1;
    if (tl_model_load_hf_weights(ckpt_dir, t->m, err)) return -1;
    snprintf(path, sizeof path, "%s/training_state.bin", ckpt_dir);
    if (tl_train_state_load(path, &t->st, err)) return -1;
    if (t->eng->ops->push(t->eng, err)) return tl_wrap(err, "%s", ckpt_dir);
    if (t->o.mixture) { /* mixture */
        if (tl_mixture_seek(t->o.mixture, t->st.data_index, err)) return tl_wrap(err, "%s", ckpt_dir);
    } else if (tl_dataset_seek(t->train, t->st.data_epoch, t->st.data_index, err)) {
        return tl_wrap(err, "%s", ckpt_dir);
    }
    truncate_log(t->log_path, (long)t->st.step);
    return 0;
}

int tl_trainer_eval(tl_trainer *t, double *loss, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len;
    double sum = 0;
    long count = 0;
    int *buf = malloc(sizeof(int) * (size_t)(t->val->seq_len + 1));
    if (!buf) return tl_fail(err, "out of memory");
    uint64_t next = 0;
    for (int i = 0; i < t->o.eval_batches; i++) {
        for (int b = 0; b < B; b++) {
            tl_dataset_get(t->val, next, buf);
            next = (next + 1) % t->val->n_samples;
            for (int s = 0; s < T; s++) {
                t->inputs[b * T + s] = buf[s];
                t->targets[b * T + s] = buf[s + 1];
            }
        }
        double ls;
        long c;
        if (t->eng->ops->loss(t->eng, t->inputs, t->targets, &ls, &c, err)) {
            free(buf);
            return tl_wrap(err, "validation");
        }
        sum += ls;
        count += c;
    }
    free(buf);
    *loss = sum / (double)count;
    return 0;
}

static int checkpoint(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err) {
    char saved[4200];
    if (t->o.mixture) { /* mixture: one counter */
        t->st.data_epoch = 0;
        t->st.data_index = t->o.mixture->pos;
    } else {
        t->st.data_epoch = t->train->epoch;
        t->st.data_index = t->train->index;
    }
    if (t->eng->ops->pull(t->eng, err)) return tl_wrap(err, "checkpoint");
    char *args = args_json(t);
    int rc = tl_checkpoint_save(t->o.out_dir, t->m, &t->st, args, t->o.tokenizer, t->o.keep, saved, sizeof saved, err);
    free(args);
    if (rc) return -1;
    if (cb) {
        tl_train_event ev = {.kind = TL_EV_CKPT, .step = (long)t->st.step, .steps = t->o.steps, .path = saved};
        cb(&ev, user);
    }
    return 0;
}

static void log_line(tl_trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(tl_trainer *t, const char *fmt, ...) {
    if (!t->log) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->log, fmt, ap);
    va_end(ap);
    fflush(t->log);
}

/* Zero-shot benchmarks on the current weights (scored on the host fp32 model). */
static int run_benchmarks(tl_trainer *t, tl_train_cb cb, void *user, tl_error *err) {
    if (t->eng->ops->pull(t->eng, err)) return tl_wrap(err, "benchmarks");
    for (int i = 0; i < t->o.n_bench; i++) {
        const tl_eval_task *task = t->o.bench[i];
        tl_eval_opts eo = {0};
        tl_eval_result r;
        if (tl_eval_run(task, t->m, &eo, &r, err)) return tl_wrap(err, "benchmark %s", tl_task_name(task->kind));
        const char *name = tl_task_name(task->kind);
        if (r.has_acc_norm)
            log_line(t, "{\"step\": %llu, \"bench\": \"%s\", \"n\": %d, \"acc\": %.6f, \"acc_stderr\": %.6f, "
                        "\"acc_norm\": %.6f, \"acc_norm_stderr\": %.6f}\n",
                     (unsigned long long)t->st.step, name, r.n, r.acc, r.acc_stderr, r.acc_norm, r.acc_norm_stderr);
        else
            log_line(t, "{\"step\": %llu, \"bench\": \"%s\", \"n\": %d, \"acc\": %.6f, \"acc_stderr\": %.6f}\n",
                     (unsigned long long)t->st.step, name, r.n, r.acc, r.acc_stderr);
        if (cb) {
            tl_train_event ev = {.kind = TL_EV_BENCH, .step = (long)t->st.step, .steps = t->o.steps, .task = name,
                                 .n = r.n, .acc = r.acc, .acc_norm = r.has_acc_norm ? r.acc_norm : NAN};
            cb(&ev, user);
        }
        tl_eval_result_free(&r);
    }
    return 0;
}

int tl_trainer_run(tl_trainer *t, tl_train_cb cb, void *user, volatile sig_atomic_t *stop, tl_error *err) {
    const int B = t->o.batch, T = t->o.seq_len, accum = t->o.accum;
    const double tokens_per_step = (double)B * T * accum;
    if (tl_mkdir_p(t->o.out_dir, err)) return tl_wrap(err, "run directory");
    t->log = fopen(t->log_path, "a");
    if (!t->log) return tl_fail(err, "%s: cannot open the log: %s", t->log_path, strerror(errno));
    double run_start = tl_now(), elapsed0 = t->st.elapsed;
    long start_step = (long)t->st.step;
    while ((long)t->st.step < t->o.steps) {
        if (stop && *stop) break;
        double t0 = tl_now();
        const tl_engine_ops *E = t->eng->ops;
        if (E->zero_grads(t->eng, err)) return -1;
        double loss = 0;
        for (int a = 0; a < accum; a++) {
            if (t->o.mixture ? tl_mixture_next(t->o.mixture, B, T, t->tokens, NULL, err)
                             : tl_dataset_next(t->train, B, T, t->tokens, err))
                return -1;
            for (int b = 0; b < B; b++)
                for (int s = 0; s < T; s++) {
                    t->inputs[b * T + s] = t->tokens[b * (T + 1) + s];
                    t->targets[b * T + s] = t->tokens[b * (T + 1) + s + 1];
                }
            double l;
            if (E->forward_backward(t->eng, t->inputs, t->targets, 1.0f / (float)accum, &l, err))
                return tl_wrap(err, "step %ld", (long)t->st.step + 1);
            loss += l / accum;
        }
        double norm;
        if (E->grad_norm(t->eng, &norm, err)) return -1;
        long step = (long)t->st.step;
        double lr = tl_lr_at(&t->o.opt, step);
        t->st.step++;
        t->st.tokens_seen += (uint64_t)tokens_per_step;
        if (!isfinite(norm) || !isfinite(loss)) {
            /* a non-finite gradient would poison the moments: skip the update */
            log_line(t, "{\"step\": %ld, \"skipped\": true, \"loss\": %s, \"grad_norm\": %s}\n", step + 1,
                     isfinite(loss) ? "0" : "null", "null");
            if (cb) {
                tl_train_event ev = {.kind = TL_EV_SKIP, .step = step + 1, .steps = t->o.steps, .loss = loss};
                cb(&ev, user);
            }
        } else {
            if (E->update(t->eng, &t->o.opt, lr, step + 1, norm, err)) return -1;
        }
        double dt = tl_now() - t0;
        t->st.elapsed = elapsed0 + (tl_now() - run_start);
        double done = (double)(t->st.step - (uint64_t)start_step);
        double rate = done / (tl_now() - run_start);
        tl_train_event ev = {.kind = TL_EV_STEP, .step = (long)t->st.step, .steps = t->o.steps, .loss = loss,
                             .lr = lr, .grad_norm = norm, .tokens_per_s = tokens_per_step / dt,
                             .elapsed = t->st.elapsed, .eta = rate > 0 ? (double)(t->o.steps - (long)t->st.step) / rate : 0};
        log_line(t, "{\"step\": %ld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, "
                    "\"tokens\": %llu, \"elapsed\": %.3f}\n",
                 ev.step, loss, lr, norm, ev.tokens_per_s, (unsigned long long)t->st.tokens_seen, ev.elapsed);
        if (cb) cb(&ev, user);

        int last = (long)t->st.step == t->o.steps;
        if (t->val && t->o.eval_every > 0 && ((long)t->st.step % t->o.eval_every == 0 || last)) {
            double vl;
            if (tl_trainer_eval(t, &vl, err)) return -1;
            log_line(t, "{\"step\": %ld, \"val_loss\": %.6f, \"val_ppl\": %.4f}\n", ev.step, vl, exp(vl));
            if (cb) {
                tl_train_event ee = {.kind = TL_EV_EVAL, .step = ev.step, .steps = t->o.steps, .val_loss = vl};
                cb(&ee, user);
            }
        }
        if (t->o.n_bench && ((t->o.bench_every > 0 && (long)t->st.step % t->o.bench_every == 0) || last))
            if (run_benchmarks(t, cb, user, err)) return -1;
        if ((t->o.ckpt_every > 0 && (long)t->st.step % t->o.ckpt_every == 0) || last)
            if (checkpoint(t, cb, user, err)) return -1;
    }
    if (stop && *stop && (long)t->st.step < t->o.steps && (long)t->st.step > start_step)
        if (checkpoint(t, cb, user, err)) return -1;
    return 0;
}
