"""Note [Tied weights]: an LM head tied to the input embeddings follows `tie_word_embeddings`
(one rule in PreTrainedModel._tied_pairs for every model), and other ties always hold."""

import numpy as np
import pytest

import ember
import ember.transformers as et

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64)  # fmt: skip
ROWS = [  # (head class, config class, config kwargs, tied target, its source)
    ("GPT2LMHeadModel", "GPT2Config", dict(vocab_size=99, n_embd=32, n_layer=1, n_head=4),
     "lm_head.weight", "transformer.wte.weight"),
    ("LlamaForCausalLM", "LlamaConfig", dict(vocab_size=99, hidden_size=32,
     intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
     "lm_head.weight", "model.embed_tokens.weight"),
    ("DistilBertForMaskedLM", "DistilBertConfig", dict(vocab_size=99, dim=32, n_layers=1,
     n_heads=4, hidden_dim=37, max_position_embeddings=64),
     "vocab_projector.weight", "distilbert.embeddings.word_embeddings.weight"),
    ("BertForMaskedLM", "BertConfig", BERT,
     "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ("RobertaForMaskedLM", "RobertaConfig", {**BERT, "pad_token_id": 1},
     "lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
]  # fmt: skip


@pytest.mark.parametrize("head,config_class,kwargs,target,source", ROWS, ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("tie", [True, False])
def test_lm_head_tie_follows_tie_word_embeddings(
    tmp_path, head, config_class, kwargs, target, source, tie
):
    ember.manual_seed(0)
    config = getattr(et, config_class)(**kwargs, tie_word_embeddings=tie)
    model = getattr(et, head)(config)
    assert (model.get_parameter(target) is model.get_parameter(source)) == tie
    model.save_pretrained(tmp_path)
    again = getattr(et, head).from_pretrained(tmp_path)
    assert (again.get_parameter(target) is again.get_parameter(source)) == tie
    np.testing.assert_array_equal(
        again.get_parameter(target).detach().numpy(), model.get_parameter(target).detach().numpy()
    )
    if head == "BertForMaskedLM":  # the decoder's bias is tied whatever the config says
        assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
