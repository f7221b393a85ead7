"""The task layer: one module per task (causal LM, sequence classification, GPT-2 label-token
classifier), each with what differs for it; hfpipe.tasks.common says what a task module provides.
A stage resolves its task once (`TASKS[params.task]`); adding a task means one module and a recipe.
"""

from hfpipe.tasks import causal_lm, classification, gpt2_classifier

TASKS = {"causal-lm": causal_lm, "classification": classification, "gpt2-classifier": gpt2_classifier}
