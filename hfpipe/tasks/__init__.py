"""The task layer: one module per task (causal LM, sequence classification, GPT-2 label-token
classifier), each implementing hfpipe.tasks.common.Task (mypy checks the table below against it).
A stage resolves its task once (`TASKS[params.task]`); adding a task means one module, its entry
in hfpipe.tasks.names and here, and a recipe.
"""

from hfpipe.tasks import causal_lm, classification, gpt2_classifier
from hfpipe.tasks.common import Task

TASKS: dict[str, Task] = {causal_lm.NAME: causal_lm, classification.NAME: classification,
                          gpt2_classifier.NAME: gpt2_classifier}
