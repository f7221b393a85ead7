"""The tasks' names and the params keys each reads, for hfpipe.params (which validates params.yaml
against them). It imports nothing, so hfpipe.params depends on no task module's code; each task
module takes its PARAM_KEYS from here and hfpipe.tasks.TASKS is checked against TASK_NAMES.
"""

# The keys only some tasks read (hfpipe.params.TASK_KEYS refuses them for the others).
CAUSAL_LM_PARAM_KEYS = (
    "dataset.filter_keywords", "dataset.validation_fraction", "dataset.max_documents", "dataset.max_bytes",
    "dataset.max_document_bytes", "dataset.streaming", "tokenize.context_length", "tokenize.method",
    "tokenize.num_proc", "train.keytoken_alpha", "train.keytokens", "train.eval_max_blocks", "evaluate.max_blocks",
    "evaluate.keytokens", "evaluate.max_new_tokens",
)
CLASSIFIER_PARAM_KEYS = (
    "dataset.text_pair_column", "dataset.label_column", "dataset.label_names", "dataset.max_train_samples",
    "dataset.max_eval_samples", "dataset.validation_split_fraction", "tokenize.max_length",
    "model.gradient_checkpointing", "train.group_by_length",
)

# task name -> the keys only some tasks read that it reads; in hfpipe.tasks.TASKS' order.
TASK_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "causal-lm": CAUSAL_LM_PARAM_KEYS,
    "classification": CLASSIFIER_PARAM_KEYS,
    "gpt2-classifier": CLASSIFIER_PARAM_KEYS,
}
TASK_NAMES = tuple(TASK_PARAM_KEYS)
