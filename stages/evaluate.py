"""Stage evaluate: validation metrics -> metrics/eval.json; completions -> metrics/report/completions.md."""

from hfpipe.io import PipelineError, run_stage, write_json_atomic, write_text_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    if params.task != "causal-lm":  # classification, gpt2-classifier
        return evaluate_classification_stage(params)
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfpipe.evaluate import SEED_PROMPTS, causal_lm_metrics, completions_markdown, greedy_completions
    from hfpipe.tasks.causal_lm import keytoken_ids

    tokenizer = AutoTokenizer.from_pretrained("models/trained")
    model = AutoModelForCausalLM.from_pretrained("models/trained")
    blocks = load_from_disk("data/tokenized")["validation"]
    if params.evaluate.max_blocks:
        blocks = blocks.select(range(min(params.evaluate.max_blocks, len(blocks))))
    keys, not_single = keytoken_ids(tokenizer, params.evaluate.keytokens)
    if not keys:
        raise PipelineError(f"evaluate.keytokens = {params.evaluate.keytokens!r}: none is a single token "
                            f"({', '.join(repr(k) for k in not_single)}); use words the tokenizer keeps whole")
    metrics = causal_lm_metrics(model, blocks, keys, params.evaluate.batch_size)
    # The same architecture, untrained (seeded): the reference the trained perplexity is judged against.
    torch.manual_seed(params.seed)
    untrained = causal_lm_metrics(AutoModelForCausalLM.from_config(model.config), blocks, keys,
                                  params.evaluate.batch_size)
    metrics["untrained_perplexity"] = untrained["perplexity"]
    metrics["perplexity_reduction"] = round(untrained["perplexity"] / metrics["perplexity"], 4)
    completions = greedy_completions(model, tokenizer, SEED_PROMPTS, params.evaluate.max_new_tokens)
    write_json_atomic("metrics/eval.json", metrics)
    write_text_atomic("metrics/report/completions.md", completions_markdown(SEED_PROMPTS, completions))
    print(f"validation perplexity {metrics['perplexity']} (untrained {untrained['perplexity']}); "
          f"'import pandas as' -> {completions[-1]!r}")


def evaluate_classification_stage(params) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.evaluate import evaluate_classification
    from hfpipe.io import atomic_dir
    from hfpipe.tasks import TASKS
    from hfpipe.tokenize import label_token_ids

    tokenizer = AutoTokenizer.from_pretrained("models/trained")
    data = load_from_disk("data/tokenized")
    gpt2 = params.task == "gpt2-classifier"
    model = TASKS[params.task].auto_model_class().from_pretrained("models/trained")
    tokens = label_token_ids(tokenizer, data["train"].features["label"].names) if gpt2 else None
    with atomic_dir("metrics/report") as report:
        metrics = evaluate_classification(model, tokenizer, data, params.task, params.evaluate.batch_size, report,
                                          tokens)
    write_json_atomic("metrics/eval.json", metrics)
    for split, m in metrics.items():
        print(f"{split}: accuracy {m['accuracy']}, F1 {m['f1']} ({m['examples']} examples)")


if __name__ == "__main__":
    run_stage(main, "evaluate")
