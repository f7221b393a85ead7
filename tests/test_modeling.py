"""hfpipe.modeling: GPT-2 config sized to the tokenizer, seeded builds, context-length checks."""

from __future__ import annotations

import pytest
import torch

from hfpipe.io import PipelineError
from hfpipe.modeling import (
    build_causal_lm,
    causal_lm_config,
    check_context_length,
    count_parameters,
    load_config,
    max_positions,
)
from hfpipe.params import ModelParams, PeftParams

CONTEXT = 32


def test_causal_lm_config_takes_ids_from_tokenizer(tiny_tokenizer, tiny_model_params):
    config = causal_lm_config(tiny_model_params, tiny_tokenizer, 48)
    assert config.model_type == "gpt2"
    assert config.vocab_size == len(tiny_tokenizer) == 350
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 0, 1)
    assert config.n_positions == 48
    assert (config.n_layer, config.n_head, config.n_embd) == (1, 2, 16)
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0


def test_causal_lm_config_dropout(tiny_tokenizer):
    config = causal_lm_config(ModelParams(n_layer=1, n_head=2, n_embd=16, dropout=0.25), tiny_tokenizer, CONTEXT)
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.25


def test_causal_lm_config_from_a_local_config_keeps_its_sizes(tiny_tokenizer, tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=3, n_head=2, n_embd=8, n_positions=64, vocab_size=999).save_pretrained(tmp_path)
    config = causal_lm_config(ModelParams(name_or_path=str(tmp_path)), tiny_tokenizer, CONTEXT)
    assert (config.n_layer, config.n_head, config.n_embd) == (3, 2, 8)  # the config's sizes, not ModelParams'
    assert config.vocab_size == 350  # our vocabulary
    assert config.n_positions == CONTEXT
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 0, 1)


def test_build_causal_lm_matches_tokenizer(tiny_model, tiny_tokenizer):
    assert tiny_model.config.n_positions == CONTEXT
    assert tiny_model.get_input_embeddings().weight.shape == (350, 16)
    assert tiny_model.transformer.wpe.weight.shape == (CONTEXT, 16)
    assert len(tiny_model.transformer.h) == 1
    assert count_parameters(tiny_model) == sum(p.numel() for p in tiny_model.parameters())
    # embeddings are tied: no separate output matrix
    assert tiny_model.lm_head.weight.data_ptr() == tiny_model.transformer.wte.weight.data_ptr()
    ids = torch.tensor([tiny_tokenizer("import pandas as pd")["input_ids"]])
    assert tiny_model(input_ids=ids).logits.shape == (1, ids.shape[1], 350)


def test_build_causal_lm_is_deterministic_per_seed(tiny_tokenizer, tiny_model_params, one_torch_thread):
    a = build_causal_lm(tiny_model_params, tiny_tokenizer, CONTEXT, seed=5).state_dict()
    torch.rand(10)  # the global RNG state before the build does not matter
    b = build_causal_lm(tiny_model_params, tiny_tokenizer, CONTEXT, seed=5).state_dict()
    c = build_causal_lm(tiny_model_params, tiny_tokenizer, CONTEXT, seed=6).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.wte.weight"], c["transformer.wte.weight"])
    assert not torch.equal(a["transformer.h.0.attn.c_attn.weight"], c["transformer.h.0.attn.c_attn.weight"])


def test_build_causal_lm_pretrained_loads_weights(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    loaded = build_causal_lm(ModelParams(name_or_path=str(tmp_path), from_scratch=False), tiny_tokenizer,
                             CONTEXT, seed=123)
    original = tiny_model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.state_dict().items())
    assert loaded.config.pad_token_id == 1


def test_a_pretrained_model_grown_for_an_added_token_gets_the_same_new_rows_per_seed(tiny_model, tiny_tokenizer,
                                                                                    tmp_path):
    """gpt2-classifier adds a pad token to a pretrained GPT-2: resize_token_embeddings draws the new
    row at random. Seeded, two runs of the same params start from the same weights (unseeded, each
    process drew another row, and the recipe's results moved from run to run)."""
    import copy

    tiny_model.save_pretrained(tmp_path)
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[NEW]"]})
    mp = ModelParams(name_or_path=str(tmp_path), from_scratch=False)
    first = build_causal_lm(mp, tokenizer, CONTEXT, seed=5).get_input_embeddings().weight[-1].detach().clone()
    torch.randn(100)  # whatever drew from the global RNG in between
    again = build_causal_lm(mp, tokenizer, CONTEXT, seed=5).get_input_embeddings().weight[-1]
    other = build_causal_lm(mp, tokenizer, CONTEXT, seed=6).get_input_embeddings().weight[-1]
    assert len(first) == tiny_model.config.n_embd and torch.equal(first, again) and not torch.equal(first, other)


def local_config(tmp_path, n_positions=64):
    from transformers import GPT2Config

    GPT2Config(n_positions=n_positions).save_pretrained(tmp_path)
    return ModelParams(name_or_path=str(tmp_path))


def test_check_context_length_above_limit(tmp_path):
    mp = local_config(tmp_path)
    with pytest.raises(PipelineError) as info:
        check_context_length(mp, 128)
    message = str(info.value)
    assert message.startswith("tokenize.context_length = 128: above the maximum of 64 positions")
    assert "use at most 64" in message and str(tmp_path) in message
    assert "\n" not in message


def test_check_context_length_within_limit(tmp_path):
    mp = local_config(tmp_path)
    assert check_context_length(mp, 64) is None
    assert check_context_length(mp, 8) is None


def test_check_context_length_custom_key(tmp_path):
    with pytest.raises(PipelineError, match=r"^tokenize.max_length = 65: above the maximum of 64"):
        check_context_length(local_config(tmp_path), 65, key="tokenize.max_length")


def test_check_context_length_without_model_path_is_free():
    assert check_context_length(ModelParams(), 10_000) is None


def test_load_config_missing_path_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match=r"^model.name_or_path = '.*nope': no such folder"):
        load_config(str(tmp_path / "nope"))


def test_max_positions():
    from transformers import BertConfig, GPT2Config

    assert max_positions(GPT2Config(n_positions=77)) == 77
    assert max_positions(BertConfig(max_position_embeddings=99)) == 99

    class NoPositions:
        pass

    assert max_positions(NoPositions()) is None


# ---- LoRA (model.peft)

def _distilbert_classifier(seed: int = 0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=120, dim=32, n_layers=1, n_heads=2,
                                                                hidden_dim=64, max_position_embeddings=64))


def _bert_classifier(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    max_position_embeddings=64))


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("build, adapted, head", [
    (_distilbert_classifier, {"q_lin", "v_lin"}, {"pre_classifier", "classifier"}),
    (_bert_classifier, {"query", "value"}, {"classifier"}),
])
def test_lora_on_a_classifier_adapts_the_attention_and_trains_the_head_fully(build, adapted, head):
    from hfpipe.modeling import add_lora, trainable_parameters

    model = build()
    total = count_parameters(model)
    wrapped = add_lora(model, PeftParams(r=4), "SEQ_CLS", "tiny", train_head=True)
    names = _trainable_names(wrapped)
    lora_layers = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if ".lora_" in n}
    head_layers = {n.split(".modules_to_save")[0].rsplit(".", 1)[-1] for n in names if "modules_to_save" in n}
    assert lora_layers == adapted and head_layers == head
    assert names == {n for n in names if ".lora_" in n or "modules_to_save" in n}  # nothing else trains
    # each adapted (32 x 32) layer gets r x 32 + 32 x r; the head trains all its weights
    head_params = sum(p.numel() for n, p in wrapped.named_parameters() if "modules_to_save" in n)
    assert trainable_parameters(wrapped) == len(adapted) * 2 * 4 * 32 + head_params
    assert trainable_parameters(wrapped) < 0.2 * total


def test_lora_on_gpt2_adapts_c_attn_and_freezes_the_tied_output_layer(tiny_model):
    import copy

    from hfpipe.modeling import add_lora

    wrapped = add_lora(copy.deepcopy(tiny_model), PeftParams(r=2), "CAUSAL_LM", "tiny")
    names = _trainable_names(wrapped)
    assert names and all(".c_attn.lora_" in n for n in names)


def test_lora_target_modules_are_checked_against_the_model():
    from hfpipe.modeling import add_lora, lora_targets

    with pytest.raises(PipelineError, match=r"'nope' matches no module of 'tiny' \(distilbert\); its adaptable "
                                            r"layers are: .*q_lin"):
        add_lora(_distilbert_classifier(), PeftParams(target_modules=["nope"]), "SEQ_CLS", "tiny", train_head=True)
    with pytest.raises(PipelineError, match="'attention' is not a linear or embedding layer"):
        lora_targets(_distilbert_classifier(), PeftParams(target_modules=["attention"]), "tiny")
    assert lora_targets(_distilbert_classifier(), PeftParams(target_modules=["out_lin"]), "tiny") == ["out_lin"]


def test_lora_has_no_default_for_an_unknown_architecture():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from hfpipe.modeling import lora_targets

    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64))
    with pytest.raises(PipelineError, match="no default for model type 'gpt_neox'.*query_key_value"):
        lora_targets(model, PeftParams(), "tiny")


def test_check_lora_targets_reads_only_the_config(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hfpipe.modeling import check_lora_targets

    _distilbert_classifier().config.save_pretrained(tmp_path)  # a config, no weights
    mp = ModelParams(name_or_path=str(tmp_path), from_scratch=False, peft=PeftParams(target_modules=["q_lin"]))
    check_lora_targets(mp, AutoModelForSequenceClassification)
    with pytest.raises(PipelineError, match="'query' matches no module"):
        check_lora_targets(mp.model_copy(update={"peft": PeftParams(target_modules=["query"])}),
                           AutoModelForSequenceClassification)


def test_saved_lora_model_is_the_merged_model_plus_a_loadable_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from hfpipe.modeling import ADAPTER_DIR, add_lora, save_trained_model

    wrapped = add_lora(_distilbert_classifier(), PeftParams(r=4), "SEQ_CLS", "tiny", train_head=True)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in wrapped.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    wrapped.eval()
    x = torch.randint(1, 120, (3, 9))
    with torch.no_grad():
        expected = wrapped(input_ids=x).logits
    save_trained_model(wrapped, tmp_path)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())


    def base_with_a_fresh_head():  # the same pretrained body, a head initialised anew (as the stage's base)
        base = _distilbert_classifier()
        torch.manual_seed(1)
        for layer in (base.pre_classifier, base.classifier):
            layer.reset_parameters()
        return base.eval()

    reloaded = PeftModel.from_pretrained(base_with_a_fresh_head(), tmp_path / ADAPTER_DIR).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).logits, expected, atol=1e-5)
        assert torch.allclose(reloaded(input_ids=x).logits, expected, atol=1e-5)
        # the head came from the adapter: the base with its fresh head alone answers differently
        assert not torch.allclose(base_with_a_fresh_head()(input_ids=x).logits, expected, atol=1e-3)
