#!/usr/bin/env python3
"""Writes the DROP generation fixture that tests/test_eval_drop.c checks against.

1. A small sample in the original release layout (docs/eval.md):
   tests/fixtures/eval_drop/drop_dataset_{train,dev}.json, objects of passages
   {"passage", "qa_pairs": [{"question", "query_id", "answer": {"number",
   "date": {"day", "month", "year"}, "spans"}, "validated_answers": [...]}]}.
   The training file has more than 21 questions, so the shot draws take
   random.sample's set branch, as on the real 77k-question file.
2. The model: the random tiny Llama of tests/fixtures/eval_gen/model (written by
   scripts/gen_eval_gen_fixtures.py).
3. The oracle: lm-evaluation-harness 0.4.x's own drop task (HF backend, batch
   size 1, greedy, --num_fewshot 3, fewshot seed 1234) on those files, converted
   to the columns of the HF copy (validated_answers as a dict of lists); the
   generated ids come from transformers' greedy generate on the same contexts.
   A second run sets one validated answer of some questions to the model's own
   continuation, so that EM and F1 are also exercised with hits.

Run from the repo root (lm-eval, torch, transformers installed):
    python3 scripts/gen_drop_fixtures.py
"""
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval_drop")
MODEL = os.path.join(ROOT, "tests", "fixtures", "eval_gen", "model")
SPM = os.path.abspath(os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.model"))
TOK_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "clean_up_tokenization_spaces": False, "legacy": False,
    "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
}
NO_DATE = {"day": "", "month": "", "year": ""}


def ans(number="", spans=(), date=None):
    return {"number": number, "date": date or dict(NO_DATE), "spans": list(spans)}


def train_data():
    teams = ["Bears", "Packers", "Lions", "Vikings", "Giants", "Eagles"]
    out = {}
    for p in range(5):
        a, b = teams[p], teams[(p + 1) % 6]
        passage = (f"The {a} played the {b} in week {p + 1}. The {a} scored {7 * p + 3} points and the {b} "
                   f"scored {p + 10}. A field goal of {30 + p} yards came late in the game.")
        qas = [
            {"question": "How many points did the %s score?" % a, "query_id": "t%d-0" % p, "answer": ans(str(7 * p + 3))},
            {"question": "Who played the %s?" % a, "query_id": "t%d-1" % p, "answer": ans(spans=[b])},
            {"question": "Which teams played?", "query_id": "t%d-2" % p, "answer": ans(spans=[a, b])},
            {"question": "How long was the field goal?", "query_id": "t%d-3" % p, "answer": ans(str(30 + p))},
            {"question": "When was the game?", "query_id": "t%d-4" % p,
             "answer": ans(date={"day": str(p + 1), "month": "September", "year": "2011"})},
        ]
        out["nfl_%d" % p] = {"passage": passage, "qa_pairs": qas}
    return out


def dev_data():
    return {
        "history_1": {
            "passage": "In 1754 the war began. By 1763, about 1,200 soldiers had been lost. The treaty was signed "
                       "in Paris on 10 February 1763 by Britain, France and Spain.",
            "qa_pairs": [
                {"question": "How many years did the war last?", "query_id": "d0", "answer": ans("9"),
                 "validated_answers": [ans("9"), ans("nine")]},
                {"question": "Where was the treaty signed?", "query_id": "d1", "answer": ans(spans=["Paris"]),
                 "validated_answers": [ans(spans=["in Paris"])]},
                {"question": "Which countries signed the treaty?", "query_id": "d2",
                 "answer": ans(spans=["Britain", "France", "Spain"]), "validated_answers": []},
                {"question": "When was the treaty signed?", "query_id": "d3",
                 "answer": ans(date={"day": "10", "month": "February", "year": "1763"}),
                 "validated_answers": [ans(date={"day": "", "month": "", "year": "1763"})]},
            ],
        },
        "nfl_9": {
            "passage": "The Saints beat the Falcons 31-24. Drew Brees threw 3 touchdowns — the longest was 45 "
                       "yards — and the café crowd cheered.",
            "qa_pairs": [
                {"question": "How many touchdowns did Brees throw?", "query_id": "d4", "answer": ans("3"),
                 "validated_answers": [ans("3")]},
                {"question": "Who won?", "query_id": "d5", "answer": ans(spans=["the Saints"]),
                 "validated_answers": [ans(spans=["Saints"]), ans(spans=["New Orleans Saints"])]},
            ],
        },
    }


def features():
    import datasets
    s = datasets.Value("string")
    date = {"day": s, "month": s, "year": s}
    return datasets.Features({
        "section_id": s, "query_id": s, "passage": s, "question": s,
        "answer": {"number": s, "date": date, "spans": datasets.Sequence(s)},
        "validated_answers": datasets.Sequence({"number": s, "date": date, "spans": datasets.Sequence(s)}),
    })


def to_hf(data):
    """The columns of the HF copy (EleutherAI/drop): one row per question."""
    rows = []
    for pid, p in data.items():
        for qa in p["qa_pairs"]:
            va = qa.get("validated_answers", [])
            rows.append({"section_id": pid, "query_id": qa["query_id"], "passage": p["passage"],
                         "question": qa["question"], "answer": qa["answer"],
                         "validated_answers": {"number": [v["number"] for v in va], "date": [v["date"] for v in va],
                                               "spans": [v["spans"] for v in va]}})
    return rows


def main():
    import datasets
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    FEATURES = features()
    os.makedirs(FIX, exist_ok=True)
    train, dev = train_data(), dev_data()
    tmp = tempfile.mkdtemp(prefix="tl_drop_")
    try:
        hf_dir = os.path.join(tmp, "hf_model")
        shutil.copytree(MODEL, hf_dir)
        shutil.copy(SPM, os.path.join(hf_dir, "tokenizer.model"))
        with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
            json.dump(TOK_CONFIG, f)
        lm = HFLM(pretrained=hf_dir, dtype="float32", batch_size=1, device="cpu")

        def run(name):
            paths = {}
            for split, data in (("train", train), ("validation", dev)):
                paths[split] = os.path.join(tmp, "%s_%s.parquet" % (name, split))
                datasets.Dataset.from_list(to_hf(data), features=FEATURES).to_parquet(paths[split])
            tdir = os.path.join(tmp, name)
            os.makedirs(tdir)
            with open(os.path.join(tdir, "local_drop.yaml"), "w") as f:
                f.write("include: %s\n" % os.path.join(base, "drop", "default.yaml"))
                f.write("task: local_drop\ndataset_path: parquet\ndataset_name: null\n")
                f.write("dataset_kwargs:\n  data_files:\n    train: %s\n    validation: %s\n"
                        % (paths["train"], paths["validation"]))
            tm = TaskManager(include_path=tdir)
            return lm_eval.simple_evaluate(model=lm, tasks=["local_drop"], num_fewshot=3, log_samples=True,
                                           task_manager=tm, fewshot_random_seed=1234)

        res = run("r1")
        samples = sorted(res["samples"]["local_drop"], key=lambda x: x["doc_id"])
        # hits: the model's own continuation becomes a validated answer of every other question
        qas = [qa for p in dev.values() for qa in p["qa_pairs"]]
        for s, qa in zip(samples, qas):
            out = s["filtered_resps"][0].strip()
            if out and s["doc_id"] % 2 == 0:
                qa.setdefault("validated_answers", []).append(ans(spans=[out]))
        res = run("r2")
        samples = sorted(res["samples"]["local_drop"], key=lambda x: x["doc_id"])
        for name, data in (("drop_dataset_train.json", train), ("drop_dataset_dev.json", dev)):
            with open(os.path.join(FIX, name), "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)

        def gen_ids(ctx, max_gen):
            enc = lm.tokenizer(ctx, return_tensors="pt")["input_ids"]
            enc = enc[:, -(lm.max_length - max_gen):]
            out = lm.model.generate(input_ids=enc, max_length=enc.shape[1] + max_gen, do_sample=False,
                                    pad_token_id=lm.tokenizer.pad_token_id, use_cache=True)
            return enc[0].tolist(), out[0, enc.shape[1]:].tolist()

        docs = []
        for s in samples:
            ctx, kw = s["arguments"][0][0], s["arguments"][0][1]
            ctx_ids, ids = gen_ids(ctx, 256)
            docs.append({"query_id": s["doc"]["query_id"], "context": ctx, "context_ids": ctx_ids, "gen_ids": ids,
                         "until": kw["until"], "response": s["resps"][0][0], "filtered": s["filtered_resps"][0],
                         "em": s["em"], "f1": s["f1"]})
        r = res["results"]["local_drop"]
        expected = {"lm_eval_version": lm_eval.__version__, "max_length": lm.max_length,
                    "em": r["em,none"], "em_stderr": r["em_stderr,none"], "f1": r["f1,none"],
                    "f1_stderr": r["f1_stderr,none"], "docs": docs}
        with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("drop em=%.4f f1=%.4f" % (r["em,none"], r["f1,none"]), [(d["filtered"], d["em"], d["f1"]) for d in docs])
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
