/* plot.c - log.jsonl read back and drawn with cairo (PNG or SVG). */
#include "plot.h"

#include <cairo/cairo-svg.h>
#include <cairo/cairo.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

void tl_run_log_free(tl_run_log *log) {
    free(log->steps);
    free(log->vals);
    log->steps = NULL;
    log->vals = NULL;
    log->n_steps = log->n_vals = 0;
}

/* A finite number under `key`, or the line's error. */
static int number(const cJSON *o, const char *key, int need, double *out, const char *file, long line, tl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (need) return tl_fail(err, "%s:%ld: a step line without \"%s\"", file, line, key);
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tl_fail(err, "%s:%ld: \"%s\" is not a finite number", file, line, key);
    *out = v->valuedouble;
    return 0;
}

static int grow(void **p, int n, int *cap, size_t size) {
    if (n < *cap) return 0;
    int c = *cap ? *cap * 2 : 256;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int parse_line(const char *s, size_t n, const char *file, long line, tl_run_log *log, int *cap_s, int *cap_v,
                      tl_error *err) {
    cJSON *o = cJSON_ParseWithLength(s, n);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return tl_fail(err, "%s:%ld: not a JSON object (a log.jsonl holds one per line)", file, line);
    }
    int rc = -1;
    const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(o, "skipped");
    double step = 0;
    if (number(o, "step", 0, &step, file, line, err)) goto out;
    if (cJSON_IsTrue(skipped)) { /* no update: nothing to draw */
        rc = 0;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "val_loss")) {
        tl_log_val v = {.tokens = NAN};
        if (number(o, "val_loss", 1, &v.loss, file, line, err)) goto out;
        const cJSON *set = cJSON_GetObjectItemCaseSensitive(o, "val_set");
        const char *name = "";
        if (set) {
            if (!cJSON_IsString(set) || strlen(set->valuestring) >= sizeof log->val_set[0]) {
                tl_fail(err, "%s:%ld: \"val_set\" is not a name (a string under %zu bytes)", file, line,
                        sizeof log->val_set[0]);
                goto out;
            }
            name = set->valuestring;
        }
        for (v.set = 0; v.set < log->n_val_sets && strcmp(log->val_set[v.set], name); v.set++) {}
        if (v.set == log->n_val_sets) {
            if (log->n_val_sets == TL_PLOT_MAX_VAL_SETS) {
                tl_fail(err, "%s:%ld: more than %d validation sets", file, line, TL_PLOT_MAX_VAL_SETS);
                goto out;
            }
            snprintf(log->val_set[log->n_val_sets++], sizeof log->val_set[0], "%s", name);
        }
        /* a validation line follows its step's line: it is drawn at that step's tokens */
        if (log->n_steps) v.tokens = log->steps[log->n_steps - 1].tokens;
        if (!isfinite(v.tokens)) {
            tl_fail(err, "%s:%ld: a validation line before any step line", file, line);
            goto out;
        }
        if (grow((void **)&log->vals, log->n_vals, cap_v, sizeof *log->vals)) {
            tl_fail(err, "%s: out of memory", file);
            goto out;
        }
        log->vals[log->n_vals++] = v;
        rc = 0;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "loss")) {
        tl_log_step st = {.phase = -1};
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(o, "phase");
        if (ph) {
            if (!cJSON_IsString(ph) || strlen(ph->valuestring) >= sizeof log->phase[0]) {
                tl_fail(err, "%s:%ld: \"phase\" is not a name (a string under %zu bytes)", file, line,
                        sizeof log->phase[0]);
                goto out;
            }
            for (st.phase = 0; st.phase < log->n_phases && strcmp(log->phase[st.phase], ph->valuestring); st.phase++) {}
            if (st.phase == log->n_phases) {
                if (log->n_phases == TL_PLOT_MAX_PHASES) {
                    tl_fail(err, "%s:%ld: more than %d phases", file, line, TL_PLOT_MAX_PHASES);
                    goto out;
                }
                snprintf(log->phase[log->n_phases++], sizeof log->phase[0], "%s", ph->valuestring);
            }
        }
        if (number(o, "loss", 1, &st.loss, file, line, err) || number(o, "lr", 1, &st.lr, file, line, err) ||
            number(o, "tokens_per_s", 1, &st.tokens_per_s, file, line, err) ||
            number(o, "tokens", 1, &st.tokens, file, line, err))
            goto out;
        if (grow((void **)&log->steps, log->n_steps, cap_s, sizeof *log->steps)) {
            tl_fail(err, "%s: out of memory", file);
            goto out;
        }
        log->steps[log->n_steps++] = st;
        rc = 0;
    } else {
        rc = 0; /* other records (DPO rewards, benchmarks): not drawn */
    }
out:
    cJSON_Delete(o);
    return rc;
}

int tl_run_log_parse(const char *text, size_t len, const char *file, tl_run_log *log, tl_error *err) {
    memset(log, 0, sizeof *log);
    snprintf(log->name, sizeof log->name, "%s", file);
    int cap_s = 0, cap_v = 0;
    long line = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t b = i, f = e;
        while (b < f && (text[b] == ' ' || text[b] == '\t' || text[b] == '\r')) b++;
        if (b < f && parse_line(text + b, f - b, file, line, log, &cap_s, &cap_v, err)) return -1;
        i = e + 1;
    }
    if (!log->n_steps) return tl_fail(err, "%s: no training steps logged (%ld lines)", file, line);
    return 0;
}

int tl_run_log_read(const char *path, tl_run_log *log, tl_error *err) {
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/log.jsonl", path);
    else snprintf(file, sizeof file, "%s", path);
    char *text;
    size_t len;
    memset(log, 0, sizeof *log);
    if (tl_read_file(file, (size_t)1 << 32, &text, &len, err)) return -1;
    int rc = tl_run_log_parse(text, len, file, log, err);
    free(text);
    /* the legend names the run, not its log */
    if (!rc) snprintf(log->name, sizeof log->name, "%s", path);
    return rc;
}

/* ---- drawing ---- */

enum { W = 960, PANEL_H = 300, N_PANELS = 3, H = PANEL_H * N_PANELS + 40 };
enum { ML = 90, MR = 30, MT = 36, MB = 54 }; /* a panel's margins */

static const double palette[][3] = {{0.12, 0.47, 0.71}, {1.00, 0.50, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16},
                                    {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50}};
#define N_COLORS ((int)(sizeof palette / sizeof palette[0]))
/* validation sets of one run: the run's colour, a dash pattern each */
static const double dashes[][4] = {{6, 4}, {2, 3}, {10, 3, 2, 3}, {12, 6}};
static const int n_dash[] = {2, 2, 4, 2};
#define N_DASHES 4

typedef struct {
    double x0, x1, y0, y1; /* data range */
    double px, py, pw, ph; /* the plotting area on the page */
} axes;

static double ax_x(const axes *a, double x) { return a->px + (x - a->x0) / (a->x1 - a->x0) * a->pw; }
static double ax_y(const axes *a, double y) { return a->py + a->ph - (y - a->y0) / (a->y1 - a->y0) * a->ph; }

/* A tick spacing of 1, 2 or 5 times a power of ten giving about five ticks. */
static double tick_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* 1.5M, 250k, 3e-04 ... short enough for an axis */
static void fmt_tick(char *buf, size_t n, double v, int si) {
    double a = fabs(v);
    if (v == 0) snprintf(buf, n, "0");
    else if (si && a >= 1e9) snprintf(buf, n, "%gG", v / 1e9);
    else if (si && a >= 1e6) snprintf(buf, n, "%gM", v / 1e6);
    else if (si && a >= 1e3) snprintf(buf, n, "%gk", v / 1e3);
    else if (a < 1e-2 || a >= 1e5) snprintf(buf, n, "%.1e", v);
    else snprintf(buf, n, "%g", v);
}

static void text_at(cairo_t *cr, double x, double y, const char *s, double align) {
    cairo_text_extents_t te;
    cairo_text_extents(cr, s, &te);
    cairo_move_to(cr, x - align * te.x_advance, y);
    cairo_show_text(cr, s);
}

static void frame(cairo_t *cr, axes *a, const char *title, const char *ylabel, int si_y) {
    /* pad the y range and cover a flat series */
    if (!(a->y1 > a->y0)) {
        double d = fabs(a->y0) > 0 ? fabs(a->y0) * 0.1 : 1;
        a->y0 -= d;
        a->y1 += d;
    } else {
        double d = (a->y1 - a->y0) * 0.05;
        a->y0 -= d;
        a->y1 += d;
    }
    if (!(a->x1 > a->x0)) a->x1 = a->x0 + 1;
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 15);
    text_at(cr, a->px + a->pw / 2, a->py - 12, title, 0.5);
    cairo_set_font_size(cr, 11);
    cairo_set_line_width(cr, 1);
    double ts = tick_step(a->x1 - a->x0);
    char buf[32];
    /* counted loops: a degenerate range (a denormal step, an overflow) draws no ticks rather than spin */
    for (int k = 0; k < 30 && ts > 0 && isfinite(ts); k++) {
        double x = (ceil(a->x0 / ts) + k) * ts;
        if (!(x <= a->x1 + ts * 1e-9)) break;
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, ax_x(a, x), a->py);
        cairo_line_to(cr, ax_x(a, x), a->py + a->ph);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        fmt_tick(buf, sizeof buf, x, 1);
        text_at(cr, ax_x(a, x), a->py + a->ph + 16, buf, 0.5);
    }
    ts = tick_step(a->y1 - a->y0);
    for (int k = 0; k < 30 && ts > 0 && isfinite(ts); k++) {
        double y = (ceil(a->y0 / ts) + k) * ts;
        if (!(y <= a->y1 + ts * 1e-9)) break;
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, a->px, ax_y(a, y));
        cairo_line_to(cr, a->px + a->pw, ax_y(a, y));
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        fmt_tick(buf, sizeof buf, y, si_y);
        text_at(cr, a->px - 6, ax_y(a, y) + 4, buf, 1);
    }
    cairo_rectangle(cr, a->px, a->py, a->pw, a->ph);
    cairo_stroke(cr);
    text_at(cr, a->px + a->pw / 2, a->py + a->ph + 36, "tokens", 0.5);
    cairo_save(cr);
    cairo_move_to(cr, a->px - 70, a->py + a->ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, 0, 0, ylabel, 0.5); /* relative to the rotated origin */
    cairo_restore(cr);
}

/* field: 0 loss, 1 lr, 2 tokens/s of the step lines */
static double field(const tl_log_step *s, int f) { return f == 0 ? s->loss : f == 1 ? s->lr : s->tokens_per_s; }

static void series(cairo_t *cr, const axes *a, const tl_run_log *r, int f, int color) {
    cairo_rectangle(cr, a->px, a->py, a->pw, a->ph);
    cairo_save(cr);
    cairo_clip(cr);
    cairo_set_source_rgb(cr, palette[color][0], palette[color][1], palette[color][2]);
    cairo_set_line_width(cr, 1.5);
    for (int i = 0; i < r->n_steps; i++) {
        double x = ax_x(a, r->steps[i].tokens), y = ax_y(a, field(&r->steps[i], f));
        if (i) cairo_line_to(cr, x, y);
        else cairo_move_to(cr, x, y);
    }
    cairo_stroke(cr);
    if (f == 0) { /* validation: dashed, one line per set, with its points marked */
        cairo_set_line_width(cr, 2);
        for (int s = 0; s < r->n_val_sets; s++) {
            int first = 1;
            cairo_set_dash(cr, dashes[s % N_DASHES], n_dash[s % N_DASHES], 0);
            for (int i = 0; i < r->n_vals; i++) {
                if (r->vals[i].set != s) continue;
                double x = ax_x(a, r->vals[i].tokens), y = ax_y(a, r->vals[i].loss);
                if (first) cairo_move_to(cr, x, y);
                else cairo_line_to(cr, x, y);
                first = 0;
            }
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
            for (int i = 0; i < r->n_vals; i++)
                if (r->vals[i].set == s) {
                    cairo_arc(cr, ax_x(a, r->vals[i].tokens), ax_y(a, r->vals[i].loss), 3, 0, 2 * M_PI);
                    cairo_fill(cr);
                }
        }
        cairo_set_dash(cr, NULL, 0, 0);
    }
    cairo_restore(cr);
}

/* A recipe's phase boundaries: a dotted line where a step's phase differs from the one before,
 * named at the top of the panel. */
static void phases(cairo_t *cr, const axes *a, const tl_run_log *r, int color) {
    static const double dot[] = {2, 3};
    cairo_save(cr);
    cairo_set_font_size(cr, 10);
    cairo_set_line_width(cr, 1);
    for (int i = 1; i < r->n_steps; i++) {
        if (r->steps[i].phase == r->steps[i - 1].phase || r->steps[i].phase < 0) continue;
        double x = ax_x(a, r->steps[i - 1].tokens); /* the tokens seen when the phase began */
        cairo_set_source_rgb(cr, palette[color][0], palette[color][1], palette[color][2]);
        cairo_set_dash(cr, dot, 2, 0);
        cairo_move_to(cr, x, a->py);
        cairo_line_to(cr, x, a->py + a->ph);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_move_to(cr, x + 3, a->py + 12 + 12 * color);
        cairo_show_text(cr, r->phase[r->steps[i].phase]);
    }
    cairo_restore(cr);
}

static void legend(cairo_t *cr, const axes *a, const tl_run_log *runs, int n_runs, int with_val) {
    cairo_set_font_size(cr, 11);
    double y = a->py + 16;
    for (int r = 0; r < n_runs; r++) {
        const double *c = palette[r % N_COLORS];
        for (int s = -1; s < (with_val ? runs[r].n_val_sets : 0); s++) {
            char label[400];
            if (s < 0) snprintf(label, sizeof label, "%s%s", runs[r].name, with_val ? " train" : "");
            else snprintf(label, sizeof label, "%s val%s%s", runs[r].name, runs[r].val_set[s][0] ? " " : "",
                          runs[r].val_set[s]);
            cairo_text_extents_t te;
            cairo_text_extents(cr, label, &te);
            double x = a->px + a->pw - 10 - te.x_advance;
            cairo_set_source_rgba(cr, 1, 1, 1, 0.8);
            cairo_rectangle(cr, x - 34, y - 11, te.x_advance + 38, 15);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, c[0], c[1], c[2]);
            if (s >= 0) cairo_set_dash(cr, dashes[s % N_DASHES], n_dash[s % N_DASHES], 0);
            cairo_set_line_width(cr, 2);
            cairo_move_to(cr, x - 30, y - 4);
            cairo_line_to(cr, x - 6, y - 4);
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
            cairo_set_source_rgb(cr, 0, 0, 0);
            cairo_move_to(cr, x, y);
            cairo_show_text(cr, label);
            y += 15;
        }
    }
}

static void draw(cairo_t *cr, const tl_run_log *runs, int n_runs) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    static const char *const titles[] = {"loss (solid: training, dashed: validation)", "learning rate",
                                         "throughput"};
    static const char *const ylabels[] = {"loss", "lr", "tokens/s"};
    for (int f = 0; f < N_PANELS; f++) {
        axes a = {.x0 = INFINITY, .x1 = -INFINITY, .y0 = INFINITY, .y1 = -INFINITY, .px = ML,
                  .py = 20 + f * PANEL_H + MT, .pw = W - ML - MR, .ph = PANEL_H - MT - MB};
        for (int r = 0; r < n_runs; r++) {
            for (int i = 0; i < runs[r].n_steps; i++) {
                double x = runs[r].steps[i].tokens, y = field(&runs[r].steps[i], f);
                a.x0 = fmin(a.x0, x), a.x1 = fmax(a.x1, x), a.y0 = fmin(a.y0, y), a.y1 = fmax(a.y1, y);
            }
            for (int i = 0; f == 0 && i < runs[r].n_vals; i++)
                a.y0 = fmin(a.y0, runs[r].vals[i].loss), a.y1 = fmax(a.y1, runs[r].vals[i].loss);
        }
        if (f > 0) a.y0 = fmin(a.y0, 0); /* lr and throughput from zero */
        a.x0 = fmin(a.x0, 0);
        frame(cr, &a, titles[f], ylabels[f], f == 2);
        for (int r = 0; r < n_runs; r++) phases(cr, &a, &runs[r], r % N_COLORS);
        for (int r = 0; r < n_runs; r++) series(cr, &a, &runs[r], f, r % N_COLORS);
        legend(cr, &a, runs, n_runs, f == 0);
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

int tl_plot_runs(const tl_run_log *runs, int n_runs, const char *out_path, tl_error *err) {
    if (n_runs < 1) return tl_fail(err, "no runs to plot");
    int svg = ends_with(out_path, ".svg");
    if (!svg && !ends_with(out_path, ".png"))
        return tl_fail(err, "%s: the plot's file name must end with .png or .svg (it picks the format)", out_path);
    cairo_surface_t *sf = svg ? cairo_svg_surface_create(out_path, W, H)
                              : cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    if (cairo_surface_status(sf) != CAIRO_STATUS_SUCCESS) {
        int rc = tl_fail(err, "%s: %s", out_path, cairo_status_to_string(cairo_surface_status(sf)));
        cairo_surface_destroy(sf);
        return rc;
    }
    cairo_t *cr = cairo_create(sf);
    draw(cr, runs, n_runs);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS && !svg) st = cairo_surface_write_to_png(sf, out_path);
    cairo_surface_finish(sf); /* the SVG is written here */
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (st != CAIRO_STATUS_SUCCESS)
        return tl_fail(err, "%s: cannot write the plot: %s", out_path, cairo_status_to_string(st));
    return 0;
}
