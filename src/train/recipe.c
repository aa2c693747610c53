/* recipe.c - the training recipe file (recipe.h), read with libyaml's document API. */
#include "recipe.h"

#include "plot.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

_Static_assert(TL_RECIPE_MAX_VAL_SETS <= TL_PLOT_MAX_VAL_SETS, "every validation set of a run can be plotted");

typedef struct {
    const char *file;
    yaml_document_t *doc;
    tl_error *err;
} ctx;

/* "FILE:LINE: KEY: message" */
static int bad(const ctx *c, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(const ctx *c, const yaml_node_t *n, const char *key, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tl_fail(c->err, "%s:%zu: %s: %s", c->file, n ? n->start_mark.line + 1 : 0, key, msg);
}

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A number, with an optional K, M, B (or G) or T suffix for token counts. */
static int num(const ctx *c, const yaml_node_t *n, const char *key, double *out) {
    const char *s = scalar(n);
    if (!s || !*s) return bad(c, n, key, "must be a number");
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K') mul = 1e3, end++;
    else if (*end == 'M') mul = 1e6, end++;
    else if (*end == 'B' || *end == 'G') mul = 1e9, end++;
    else if (*end == 'T') mul = 1e12, end++;
    if (end == s || *end || !isfinite(v * mul)) return bad(c, n, key, "must be a number, got '%s'", s);
    *out = v * mul;
    return 0;
}

/* A count (tokens, sequences): a whole number >= lo and below 2^53. */
static int count(const ctx *c, const yaml_node_t *n, const char *key, double lo, double *out) {
    if (num(c, n, key, out)) return -1;
    if (!(*out >= lo) || *out != floor(*out) || *out > 9007199254740992.0)
        return bad(c, n, key, "must be a whole number >= %.0f, got %s", lo, scalar(n));
    return 0;
}

static int str(const ctx *c, const yaml_node_t *n, const char *key, char *out, size_t cap) {
    const char *s = scalar(n);
    if (!s || !*s) return bad(c, n, key, "must be a non-empty string");
    if (strlen(s) >= cap) return bad(c, n, key, "longer than %zu characters", cap - 1);
    snprintf(out, cap, "%s", s);
    return 0;
}

/* Checks that a mapping holds only known, distinct keys. */
static int keys_known(const ctx *c, const yaml_node_t *map, const char *where, const char *const *known) {
    if (!map || map->type != YAML_MAPPING_NODE) return bad(c, map, where, "must be a mapping (key: value lines)");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const char *ks = scalar(k);
        if (!ks) return bad(c, k, where, "keys must be plain words");
        int found = 0;
        for (const char *const *q = known; *q && !found; q++) found = !strcmp(*q, ks);
        if (!found) {
            char list[400] = "";
            for (const char *const *q = known; *q; q++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", q == known ? "" : ", ", *q);
            return bad(c, k, where, "unknown key '%s' (known: %s)", ks, list);
        }
        for (yaml_node_pair_t *e = map->data.mapping.pairs.start; e < p; e++)
            if (!strcmp(scalar(yaml_document_get_node(c->doc, e->key)), ks))
                return bad(c, k, where, "key '%s' given twice", ks);
    }
    return 0;
}

static const yaml_node_t *get(const ctx *c, const yaml_node_t *map, const char *key) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *ks = scalar(yaml_document_get_node(c->doc, p->key));
        if (ks && !strcmp(ks, key)) return yaml_document_get_node(c->doc, p->value);
    }
    return NULL;
}

static int parse_model(const ctx *c, const yaml_node_t *n, tl_recipe *r) {
    static const char *const known[] = {"preset", "config", "init", "vocab_size", NULL};
    if (keys_known(c, n, "model", known)) return -1;
    const yaml_node_t *v;
    int given = 0;
    if ((v = get(c, n, "preset")) && (++given, str(c, v, "model.preset", r->preset, sizeof r->preset))) return -1;
    if ((v = get(c, n, "config")) && (++given, str(c, v, "model.config", r->config, sizeof r->config))) return -1;
    if ((v = get(c, n, "init")) && (++given, str(c, v, "model.init", r->init, sizeof r->init))) return -1;
    if (given > 1) return bad(c, n, "model", "give at most one of preset, config, init");
    double d;
    if ((v = get(c, n, "vocab_size"))) {
        if (count(c, v, "model.vocab_size", 1, &d)) return -1;
        if (d > (1 << 24)) return bad(c, v, "model.vocab_size", "must be at most %d", 1 << 24);
        r->vocab_size = (long)d;
    }
    return 0;
}

static int parse_optimizer(const ctx *c, const yaml_node_t *n, tl_adamw_config *o) {
    static const char *const known[] = {"lr", "min_lr", "beta1", "beta2", "eps", "weight_decay", "clip", NULL};
    if (keys_known(c, n, "optimizer", known)) return -1;
    double *dst[] = {&o->lr, &o->min_lr, &o->beta1, &o->beta2, &o->eps, &o->weight_decay, &o->clip};
    for (int i = 0; known[i]; i++) {
        const yaml_node_t *v = get(c, n, known[i]);
        char key[64];
        snprintf(key, sizeof key, "optimizer.%s", known[i]);
        if (v && num(c, v, key, dst[i])) return -1;
    }
    tl_error e;
    const char *f = NULL;
    if (tl_adamw_config_validate(o, &f, &e)) { /* the values, named as the file names them */
        char key[64];
        snprintf(key, sizeof key, "optimizer.%s", f ? f : "?");
        const yaml_node_t *v = f ? get(c, n, f) : NULL;
        return bad(c, v ? v : n, key, "%s", e.msg);
    }
    return 0;
}

static int parse_schedule(const ctx *c, const yaml_node_t *n, tl_recipe *r) {
    static const char *const known[] = {"kind", "warmup_tokens", "decay_tokens", "cooldown_tokens", "cooldown", NULL};
    if (keys_known(c, n, "schedule", known)) return -1;
    tl_lr_schedule *s = &r->sched;
    const yaml_node_t *v;
    if ((v = get(c, n, "kind"))) {
        const char *k = scalar(v);
        if (k && !strcmp(k, "cosine")) s->kind = TL_SCHED_COSINE;
        else if (k && !strcmp(k, "wsd")) s->kind = TL_SCHED_WSD;
        else return bad(c, v, "schedule.kind", "must be cosine or wsd");
    }
    if ((v = get(c, n, "warmup_tokens"))) {
        if (count(c, v, "schedule.warmup_tokens", 0, &s->warmup)) return -1;
        r->warmup_given = 1;
    }
    if ((v = get(c, n, "decay_tokens")) && count(c, v, "schedule.decay_tokens", 1, &s->decay)) return -1;
    if ((v = get(c, n, "cooldown_tokens")) && count(c, v, "schedule.cooldown_tokens", 0, &s->cooldown)) return -1;
    if ((v = get(c, n, "cooldown"))) {
        const char *k = scalar(v);
        if (k && !strcmp(k, "linear")) s->shape = TL_COOLDOWN_LINEAR;
        else if (k && !strcmp(k, "1-sqrt")) s->shape = TL_COOLDOWN_SQRT;
        else return bad(c, v, "schedule.cooldown", "must be linear or 1-sqrt");
    }
    if (s->kind != TL_SCHED_WSD && (get(c, n, "cooldown_tokens") || get(c, n, "cooldown")))
        return bad(c, n, "schedule", "cooldown and cooldown_tokens belong to kind: wsd");
    return 0;
}

/* A validation set, wherever the recipe names it (the validation list, a phase, a source):
 * every set is evaluated from the first step on, so a domain's curve before its phase is
 * the baseline the phase is judged by.  A name given again must name the same path. */
static int add_val(const ctx *c, tl_recipe *r, const yaml_node_t *n, const char *key, const char *name,
                   const char *path) {
    if (!*name || strlen(name) >= sizeof r->val[0].name)
        return bad(c, n, key, "a validation set's name must have 1 to %zu characters", sizeof r->val[0].name - 1);
    for (const char *q = name; *q; q++) /* a log field and a TensorBoard tag */
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || strchr("-_.", *q)))
            return bad(c, n, key, "validation set '%s': use letters, digits, '-', '_' and '.' only in its name", name);
    if (!*path || strlen(path) >= sizeof r->val[0].path)
        return bad(c, n, key, "validation set '%s': its path must have 1 to %zu characters", name,
                   sizeof r->val[0].path - 1);
    for (int j = 0; j < r->n_val; j++)
        if (!strcmp(r->val[j].name, name)) {
            if (!strcmp(r->val[j].path, path)) return 0; /* the same set, named again */
            return bad(c, n, key, "validation set '%s' is %s here but %s at line %d", name, path, r->val[j].path,
                       r->val[j].line);
        }
    if (r->n_val == TL_RECIPE_MAX_VAL_SETS)
        return bad(c, n, key, "at most %d validation sets in a recipe", TL_RECIPE_MAX_VAL_SETS);
    snprintf(r->val[r->n_val].name, sizeof r->val[0].name, "%s", name);
    snprintf(r->val[r->n_val].path, sizeof r->val[0].path, "%s", path);
    snprintf(r->val[r->n_val].key, sizeof r->val[0].key, "%s", key);
    r->val[r->n_val].line = n ? (int)n->start_mark.line + 1 : 0;
    r->n_val++;
    return 0;
}

/* A phase's `validation: {name: path, ...}` */
static int parse_phase_val(const ctx *c, const yaml_node_t *n, const char *where, tl_recipe *r) {
    if (n->type != YAML_MAPPING_NODE) return bad(c, n, where, "must be a mapping of name: path");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key), *v = yaml_document_get_node(c->doc, p->value);
        const char *ks = scalar(k);
        if (!ks) return bad(c, k, where, "keys must be plain words (the sets' names)");
        for (yaml_node_pair_t *e = n->data.mapping.pairs.start; e < p; e++)
            if (!strcmp(scalar(yaml_document_get_node(c->doc, e->key)), ks))
                return bad(c, k, where, "validation set '%s' given twice", ks);
        char key[400], path[1024];
        snprintf(key, sizeof key, "%s.%s", where, ks);
        if (str(c, v, key, path, sizeof path) || add_val(c, r, v, key, ks, path)) return -1;
    }
    return 0;
}

static int parse_sources(const ctx *c, const yaml_node_t *n, const char *where, tl_recipe_phase *ph, tl_recipe *r) {
    static const char *const known[] = {"name", "path", "weight", "start_weight", "validation", NULL};
    if (n->type != YAML_SEQUENCE_NODE) return bad(c, n, where, "must be a list of sources");
    int k = 0;
    double sum = 0, sum0 = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++, k++) {
        const yaml_node_t *s = yaml_document_get_node(c->doc, *it);
        char at[240], key[300];
        snprintf(at, sizeof at, "%s[%d]", where, k);
        if (k == TL_MIX_MAX_SOURCES) return bad(c, s, at, "at most %d sources", TL_MIX_MAX_SOURCES);
        if (keys_known(c, s, at, known)) return -1;
        tl_recipe_source *src = &ph->src[k];
        const yaml_node_t *v;
        src->start_weight = -1;
        snprintf(key, sizeof key, "%s.name", at);
        if (!(v = get(c, s, "name"))) return bad(c, s, key, "missing");
        if (str(c, v, key, src->name, sizeof src->name)) return -1;
        for (int j = 0; j < k; j++)
            if (!strcmp(ph->src[j].name, src->name)) return bad(c, v, key, "source '%s' given twice", src->name);
        snprintf(key, sizeof key, "%s.path", at);
        if (!(v = get(c, s, "path"))) return bad(c, s, key, "missing");
        if (str(c, v, key, src->path, sizeof src->path)) return -1;
        snprintf(key, sizeof key, "%s.weight", at);
        if (!(v = get(c, s, "weight"))) return bad(c, s, key, "missing");
        if (num(c, v, key, &src->weight)) return -1;
        if (!(src->weight >= 0)) return bad(c, v, key, "must not be negative");
        if ((v = get(c, s, "start_weight"))) {
            snprintf(key, sizeof key, "%s.start_weight", at);
            if (num(c, v, key, &src->start_weight)) return -1;
            if (!(src->start_weight >= 0)) return bad(c, v, key, "must not be negative");
        }
        if ((v = get(c, s, "validation"))) { /* the source's domain, held out: a set of its name */
            char path[1024];
            snprintf(key, sizeof key, "%s.validation", at);
            if (str(c, v, key, path, sizeof path) || add_val(c, r, v, key, src->name, path)) return -1;
        }
        sum += src->weight;
        sum0 += src->start_weight >= 0 ? src->start_weight : src->weight;
    }
    if (k == 0) return bad(c, n, where, "no sources");
    if (!(sum > 0)) return bad(c, n, where, "the weights must sum to a positive number (got %g)", sum);
    if (!(sum0 > 0)) return bad(c, n, where, "the start weights must sum to a positive number (got %g)", sum0);
    ph->n_sources = k;
    return 0;
}

static int parse_phase(const ctx *c, const yaml_node_t *n, int i, tl_recipe_phase *ph, tl_recipe *r) {
    static const char *const known[] = {"name",   "tokens",  "batch_tokens", "ramp_tokens",
                                        "lr",     "sources", "validation",   NULL};
    char at[96], key[160];
    const char *nm = n->type == YAML_MAPPING_NODE ? scalar(get(c, n, "name")) : NULL;
    if (nm && strlen(nm) < 64) snprintf(at, sizeof at, "phases[%d] (%s)", i, nm);
    else snprintf(at, sizeof at, "phases[%d]", i);
    if (keys_known(c, n, at, known)) return -1;
    const yaml_node_t *v;
    ph->line = (int)n->start_mark.line + 1;
    snprintf(ph->name, sizeof ph->name, "phase%d", i + 1);
    if ((v = get(c, n, "name"))) {
        snprintf(key, sizeof key, "%s.name", at);
        if (str(c, v, key, ph->name, sizeof ph->name)) return -1;
        for (const char *q = ph->name; *q; q++) /* it goes into log lines and messages as it is */
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || strchr("-_.", *q)))
                return bad(c, v, key, "use letters, digits, '-', '_' and '.' only");
    }
    snprintf(at, sizeof at, "phases[%d] (%s)", i, ph->name); /* later messages also say which phase by name */
    snprintf(key, sizeof key, "%s.tokens", at);
    if (!(v = get(c, n, "tokens"))) return bad(c, n, key, "missing: the length of the phase in tokens");
    if (count(c, v, key, 1, &ph->tokens)) return -1;
    if ((v = get(c, n, "batch_tokens"))) {
        snprintf(key, sizeof key, "%s.batch_tokens", at);
        if (count(c, v, key, 1, &ph->batch_tokens)) return -1;
    }
    if ((v = get(c, n, "ramp_tokens"))) {
        snprintf(key, sizeof key, "%s.ramp_tokens", at);
        if (count(c, v, key, 0, &ph->ramp_tokens)) return -1;
    }
    if ((v = get(c, n, "lr"))) {
        snprintf(key, sizeof key, "%s.lr", at);
        const char *s = scalar(v);
        if (s && !strcmp(s, "schedule")) ph->lr = 0;
        else if (num(c, v, key, &ph->lr) || !(ph->lr > 0))
            return bad(c, v, key, "must be 'schedule' or a learning rate > 0");
    }
    if ((v = get(c, n, "sources"))) {
        snprintf(key, sizeof key, "%s.sources", at);
        if (parse_sources(c, v, key, ph, r)) return -1;
    } else if (i == 0) {
        return bad(c, n, at, "the first phase must list its sources");
    }
    if ((v = get(c, n, "validation"))) {
        snprintf(key, sizeof key, "%s.validation", at);
        if (parse_phase_val(c, v, key, r)) return -1;
    }
    return 0;
}

/* The recipe's `validation:` list of {name, path}, read before the phases */
static int parse_validation(const ctx *c, const yaml_node_t *n, tl_recipe *r) {
    static const char *const known[] = {"name", "path", NULL};
    if (n->type != YAML_SEQUENCE_NODE) return bad(c, n, "validation", "must be a list of {name, path}");
    int k = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++, k++) {
        const yaml_node_t *s = yaml_document_get_node(c->doc, *it), *v, *pv;
        char at[64], key[96], name[64], path[1024];
        snprintf(at, sizeof at, "validation[%d]", k);
        if (keys_known(c, s, at, known)) return -1;
        snprintf(key, sizeof key, "%s.name", at);
        if (!(v = get(c, s, "name"))) return bad(c, s, key, "missing");
        if (str(c, v, key, name, sizeof name)) return -1;
        for (int j = 0; j < r->n_val; j++)
            if (!strcmp(r->val[j].name, name)) return bad(c, v, key, "given twice");
        snprintf(key, sizeof key, "%s.path", at);
        if (!(pv = get(c, s, "path"))) return bad(c, s, key, "missing");
        if (str(c, pv, key, path, sizeof path) || add_val(c, r, v, at, name, path)) return -1;
    }
    return 0;
}

static int parse_root(const ctx *c, const yaml_node_t *root, tl_recipe *r, tl_train_request *rq) {
    static const char *const known[] = {"model", "optimizer", "schedule", "micro_batch", "seq_len", "seed",
                                        "phases", "validation", "eval_every", "eval_batches", "loss_spikes", NULL};
    if (!root) return tl_fail(c->err, "%s: empty recipe", c->file);
    if (keys_known(c, root, "recipe", known)) return -1;
    const yaml_node_t *v;
    double d;
    if ((v = get(c, root, "model")) && parse_model(c, v, r)) return -1;
    if ((v = get(c, root, "optimizer")) && parse_optimizer(c, v, &rq->opt)) return -1;
    if ((v = get(c, root, "schedule")) && parse_schedule(c, v, r)) return -1;
    if ((v = get(c, root, "micro_batch"))) {
        if (count(c, v, "micro_batch", 1, &d) || (d > (1 << 20) && bad(c, v, "micro_batch", "too large"))) return -1;
        rq->batch = (long)d;
    }
    if ((v = get(c, root, "seq_len"))) {
        if (count(c, v, "seq_len", 1, &d) || (d > (1 << 20) && bad(c, v, "seq_len", "too large"))) return -1;
        rq->seq_len = (long)d;
    }
    if ((v = get(c, root, "loss_spikes"))) {
        static const char *const ks[] = {"z", "window", "max_skips", NULL};
        const yaml_node_t *x;
        if (keys_known(c, v, "loss_spikes", ks)) return -1;
        if ((x = get(c, v, "z")) && (num(c, x, "loss_spikes.z", &rq->spike_z) ||
                                     (!(rq->spike_z >= 0) && bad(c, x, "loss_spikes.z", "must be >= 0 (0: off)"))))
            return -1;
        if ((x = get(c, v, "window"))) {
            if (count(c, x, "loss_spikes.window", 1, &d) ||
                (d > TL_LOSS_WINDOW_MAX && bad(c, x, "loss_spikes.window", "at most %d", TL_LOSS_WINDOW_MAX)))
                return -1;
            rq->spike_window = (long)d;
        }
        if ((x = get(c, v, "max_skips"))) {
            if (count(c, x, "loss_spikes.max_skips", 0, &d) || (d > (1 << 30) && bad(c, x, "loss_spikes.max_skips", "too large")))
                return -1;
            rq->max_skips = (long)d;
        }
    }
    if ((v = get(c, root, "eval_every"))) {
        if (count(c, v, "eval_every", 0, &d) || (d > 1e15 && bad(c, v, "eval_every", "too large"))) return -1;
        rq->eval_every = (long)d;
    }
    if ((v = get(c, root, "eval_batches"))) {
        if (count(c, v, "eval_batches", 1, &d) || (d > (1 << 30) && bad(c, v, "eval_batches", "too large"))) return -1;
        rq->eval_batches = (long)d;
    }
    if ((v = get(c, root, "seed"))) {
        if (count(c, v, "seed", 0, &d)) return -1;
        rq->seed = (uint64_t)d;
    }
    if ((v = get(c, root, "validation")) && parse_validation(c, v, r)) return -1;
    if (!(v = get(c, root, "phases"))) return bad(c, root, "phases", "missing: a list of at least one phase");
    if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start)
        return bad(c, v, "phases", "must be a list of at least one phase");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        if (r->n_phases == TL_RECIPE_MAX_PHASES)
            return bad(c, v, "phases", "at most %d phases", TL_RECIPE_MAX_PHASES);
        if (parse_phase(c, yaml_document_get_node(c->doc, *it), r->n_phases, &r->phase[r->n_phases], r)) return -1;
        r->n_phases++;
    }
    tl_lr_schedule s = r->sched;
    double total = 0;
    for (int i = 0; i < r->n_phases; i++) total += r->phase[i].tokens;
    if (!s.decay) s.decay = total;
    const char *f = NULL;
    tl_error e;
    if (r->warmup_given && tl_lr_schedule_validate(&s, &f, &e)) {
        char key[64];
        snprintf(key, sizeof key, "schedule.%s_tokens", f);
        const yaml_node_t *sn = get(c, root, "schedule");
        return bad(c, sn ? sn : root, key, "%s", e.msg);
    }
    rq->steps = 0; /* the phases' */
    return 0;
}

int tl_recipe_parse(const char *text, size_t len, const char *file, tl_recipe *r, tl_train_request *rq,
                    tl_error *err) {
    memset(r, 0, sizeof *r);
    snprintf(r->file, sizeof r->file, "%s", file);
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return tl_fail(err, "%s: out of memory", file);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &doc)) {
        int rc = tl_fail(err, "%s:%zu:%zu: not valid YAML: %s", file, p.problem_mark.line + 1,
                         p.problem_mark.column + 1, p.problem ? p.problem : "parse error");
        yaml_parser_delete(&p);
        return rc;
    }
    ctx c = {.file = file, .doc = &doc, .err = err};
    tl_train_request keep = *rq; /* a refused recipe leaves the request as it was */
    int rc = parse_root(&c, yaml_document_get_root_node(&doc), r, rq);
    if (rc) *rq = keep;
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    return rc;
}

int tl_recipe_load(const char *path, tl_recipe *r, tl_train_request *rq, tl_error *err) {
    char *text;
    size_t len;
    if (tl_read_file(path, 1 << 20, &text, &len, err)) return tl_wrap(err, "recipe");
    int rc = tl_recipe_parse(text, len, path, r, rq, err);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ setup */

void tl_recipe_run_close(tl_recipe_run *run) {
    for (int p = 0; p < run->n; p++) tl_mixture_close(&run->mix[p]);
    for (int v = 0; v < run->n_val; v++) tl_dataset_close(&run->val[v]);
    run->n = run->n_val = 0;
}

int tl_recipe_check_batch(const tl_recipe *r, const tl_train_request *rq, tl_error *err) {
    if (rq->batch < 1 || rq->world < 1) return tl_fail(err, "%s: micro-batch and ranks must be >= 1", r->file);
    /* without a sequence length yet, ranks x micro-batch: a factor of the whole micro-batch */
    const double micro = (double)rq->batch * (double)(rq->seq_len > 0 ? rq->seq_len : 1) * rq->world;
    double prev_batch = 0;
    for (int p = 0; p < r->n_phases; p++) {
        const tl_recipe_phase *ph = &r->phase[p];
        double bt = rq->batch_tokens > 0 ? (double)rq->batch_tokens : ph->batch_tokens ? ph->batch_tokens : prev_batch;
        if (!(bt > 0)) continue; /* a missing batch: tl_recipe_setup names it */
        if (fmod(bt, micro) != 0) {
            if (rq->seq_len > 0)
                return tl_fail(err, "%s:%d: phases[%d] (%s).batch_tokens: %.0f tokens is not a multiple of ranks x "
                                    "micro_batch x seq_len = %d x %ld x %ld",
                               r->file, ph->line, p, ph->name, bt, rq->world, rq->batch, rq->seq_len);
            return tl_fail(err, "%s:%d: phases[%d] (%s).batch_tokens: %.0f tokens is not a multiple of ranks x "
                                "micro_batch = %d x %ld",
                           r->file, ph->line, p, ph->name, bt, rq->world, rq->batch);
        }
        prev_batch = bt;
    }
    return 0;
}

int tl_recipe_setup(const tl_recipe *r, const tl_train_request *rq, const tl_dataset_opts *open_opts, int rank,
                    tl_recipe_run *run, tl_train_opts *o, const char **field, tl_error *err) {
    memset(run, 0, sizeof *run);
    if (field) *field = NULL;
    const char *F = r->file;
    if (rq->batch < 1 || rq->seq_len < 1 || rq->world < 1) {
        if (field) *field = rq->batch < 1 ? "batch" : rq->seq_len < 1 ? "seq_len" : "world";
        return tl_fail(err, "%s: micro-batch, sequence length and ranks must be >= 1", F);
    }
    const double micro = (double)rq->batch * (double)rq->seq_len * rq->world; /* tokens of one micro-batch per rank */
    /* samples each source name has given in the phases before: a later phase continues there */
    char seen[TL_RECIPE_MAX_PHASES * TL_MIX_MAX_SOURCES][64];
    uint64_t seen_count[TL_RECIPE_MAX_PHASES * TL_MIX_MAX_SOURCES];
    int n_seen = 0;
    double prev_batch = 0, total_tokens = 0;
    long total_steps = 0;
    const tl_recipe_phase *data = NULL; /* the phase whose sources the current one reads */
    for (int p = 0; p < r->n_phases; p++) {
        const tl_recipe_phase *ph = &r->phase[p];
        double bt = rq->batch_tokens > 0 ? (double)rq->batch_tokens : ph->batch_tokens ? ph->batch_tokens : prev_batch;
        if (!(bt > 0)) {
            if (field) *field = "batch_tokens";
            tl_recipe_run_close(run);
            return tl_fail(err, "%s:%d: phases[%d] (%s).batch_tokens: missing (the first phase gives the global batch)",
                           F, ph->line, p, ph->name);
        }
        if (fmod(bt, micro) != 0) {
            if (field) *field = "batch_tokens";
            tl_recipe_run_close(run);
            return tl_fail(err, "%s:%d: phases[%d] (%s).batch_tokens: %.0f tokens is not a multiple of ranks x "
                                "micro_batch x seq_len = %d x %ld x %ld",
                           F, ph->line, p, ph->name, bt, rq->world, rq->batch, rq->seq_len);
        }
        if (bt / micro > (1 << 30)) {
            tl_recipe_run_close(run);
            return tl_fail(err, "%s:%d: phases[%d] (%s).batch_tokens: too many micro-batches per step", F, ph->line, p,
                           ph->name);
        }
        prev_batch = bt;
        const int accum = (int)(bt / micro);
        const double steps = ceil(ph->tokens / bt);
        if (steps > 1e15) {
            tl_recipe_run_close(run);
            return tl_fail(err, "%s:%d: phases[%d] (%s).tokens: too many steps", F, ph->line, p, ph->name);
        }
        if (ph->n_sources) data = ph;
        /* the phase's mixture: sources without a ramp when taken over from an earlier phase */
        tl_mixture *m = &run->mix[p];
        tl_mixture_init(m);
        m->open_opts = *open_opts;
        run->n = p + 1;
        for (int k = 0; k < data->n_sources; k++) {
            const tl_recipe_source *s = &data->src[k];
            const char *paths[1] = {s->path};
            double start = data == ph ? s->start_weight : -1;
            if (tl_mixture_add(m, s->name, s->weight, start, paths, 1, err)) {
                tl_recipe_run_close(run);
                return tl_wrap(err, "%s:%d: phases[%d] (%s).sources", F, ph->line, p, ph->name);
            }
        }
        double ramp = data == ph ? ph->ramp_tokens / (double)rq->seq_len : 0; /* in samples */
        if (tl_mixture_finish(m, rq->seed, !rq->sequential, rank, rq->world, (uint64_t)ramp, err)) {
            tl_recipe_run_close(run);
            return tl_wrap(err, "%s:%d: phases[%d] (%s)", F, ph->line, p, ph->name);
        }
        for (int k = 0; k < m->n; k++)
            for (int j = 0; j < n_seen; j++)
                if (!strcmp(seen[j], m->src[k].name)) m->src[k].offset = seen_count[j];
        const uint64_t draws = (uint64_t)steps * (uint64_t)accum * (uint64_t)rq->batch * (uint64_t)rq->world;
        for (int k = 0; k < m->n; k++) {
            uint64_t c = tl_mixture_count(m, k, draws);
            int j = 0;
            while (j < n_seen && strcmp(seen[j], m->src[k].name)) j++;
            if (j == n_seen) {
                snprintf(seen[n_seen], sizeof seen[0], "%s", m->src[k].name);
                seen_count[n_seen++] = 0;
            }
            seen_count[j] += c;
        }
        run->phase[p] = (tl_train_phase){.name = ph->name, .steps = (long)steps, .accum = accum, .mixture = m,
                                         .lr = ph->lr};
        total_steps += (long)steps;
        total_tokens += steps * bt;
    }
    /* the schedule in tokens; step options are steps of the first phase's batch */
    const double bt0 = (double)run->phase[0].accum * micro;
    tl_lr_schedule s = r->sched;
    if (rq->warmup >= 0) s.warmup = (double)rq->warmup * bt0;
    else if (!r->warmup_given) /* as tl_train_setup: a tenth of the run, at most TinyLlama's 2000 steps */
        s.warmup = fmin(floor(total_tokens / 10), (double)tl_adamw_defaults().warmup_steps * bt0);
    if (rq->decay_steps >= 0) s.decay = (double)rq->decay_steps * bt0;
    else if (!s.decay) s.decay = total_tokens;
    const char *f = NULL;
    if (tl_lr_schedule_validate(&s, &f, err)) {
        if (field) *field = f && !strcmp(f, "warmup") ? "warmup" : f && !strcmp(f, "decay") ? "decay_steps" : f;
        tl_recipe_run_close(run);
        return tl_wrap(err, "%s", F);
    }
    /* the validation sets: a path is opened as --val-data is (a directory means its val-*.bin) */
    tl_dataset_opts vopts = *open_opts;
    vopts.split = "val";
    for (int v = 0; v < r->n_val; v++) {
        const char *paths[1] = {r->val[v].path};
        if (tl_dataset_open_ex(&run->val[v], paths, 1, &vopts, err)) {
            tl_recipe_run_close(run);
            return tl_wrap(err, "%s:%d: %s: validation set '%s'", F, r->val[v].line, r->val[v].key, r->val[v].name);
        }
        run->n_val = v + 1;
        run->val_ptr[v] = &run->val[v];
        run->val_name[v] = r->val[v].name;
    }
    /* everything else as for a run without phases */
    tl_train_request q = *rq;
    q.has_val = rq->has_val || r->n_val > 0;
    q.steps = total_steps;
    q.batch_tokens = 0;
    q.warmup = 0;
    q.decay_steps = total_steps;
    if (tl_train_setup(&q, o, field, err)) {
        tl_recipe_run_close(run);
        return tl_wrap(err, "%s", F);
    }
    o->steps = rq->steps > 0 && rq->steps < total_steps ? rq->steps : total_steps;
    o->accum = run->phase[0].accum;
    o->sched = s;
    o->by_tokens = 1;
    o->mixture = NULL;
    o->phases = run->phase;
    o->n_phases = run->n;
    o->val_sets = run->val_ptr;
    o->val_names = run->val_name;
    o->n_val_sets = run->n_val;
    return 0;
}

int tl_recipe_open(const tl_recipe *r, const tl_train_request *rq, const tl_train_data *d,
                   const tl_data_tokenizer *tokenizer, int rank, tl_recipe_run *run, tl_train_opts *o,
                   const char **field, tl_error *err) {
    /* as tl_train_data_open opens shards: members of complete `prepare` manifests */
    const tl_dataset_opts train_opts = {.split = "train", .verify = 1};
    if (tl_recipe_setup(r, rq, &train_opts, rank, run, o, field, err)) return -1;
    tl_data_tokenizer any = {.hash = ""}; /* origin "": not known, so any tokenizer passes */
    const tl_data_tokenizer *want = tokenizer ? tokenizer : &any;
    int rc = 0;
    for (int p = 0; p < run->n && !rc; p++) /* all made with one tokenizer */
        for (int k = 0; k < run->mix[p].n && !rc; k++) {
            const tl_data_tokenizer *t = &run->mix[p].src[k].ds.tok;
            rc = tl_data_tokenizer_check(t, want, err) || (d->has_val && tl_data_tokenizer_check(t, &d->val.tok, err));
        }
    for (int v = 0; v < run->n_val && !rc; v++) rc = tl_data_tokenizer_check(&run->val[v].tok, want, err);
    if (rc) {
        if (field) *field = NULL;
        tl_recipe_run_close(run);
        return -1;
    }
    return 0;
}
