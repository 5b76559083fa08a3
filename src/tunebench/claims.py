"""The claims of ../shared/claims.md as data: C01..C29.

Each claim is tested by one or more contrasts. A contrast compares two sets of arms of a
dimension (treatment - control) on one run metric, per seed (paired), on every workload
of that dimension (or the listed ones). Where a set matches several arms (e.g. "adam at
any lr"), the arm with the best mean *validation* score is picked first, and the contrast
then compares test metrics: selection on validation, report on test.

Kinds of prediction:
- expected = +1 / -1: the sign of (treatment - control) the advice predicts;
- margin: "at least as good": non-inferiority, supported when the interval of the
  difference lies above -margin (the test runs on difference + margin);
- stated: the magnitude the post states; an interval far below it refutes the claim;
- minus: an interaction, (treatment - control) - (minus.treatment - minus.control), e.g.
  "the adaptive lead grows with depth".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunebench.config import RunConfig
from tunebench.data import TOKEN_VOCABS

SOURCE = 'the post "深度学习调参技巧" ("Tips for tuning deep learning", 2019-08-01)'

# Run metrics (aggregate.summarize_run) and whether higher is better.
METRICS = {
    "final_test_acc": ("final test accuracy", True),
    "test_at_best_val": ("test accuracy at the best validation epoch", True),
    "test_acc_epoch1": ("test accuracy after epoch 1", True),
    "final_train_acc": ("final train accuracy", True),
    "final_test_loss": ("final test loss (MSE, standardised target)", False),
    "final_train_loss": ("final train loss", False),
    "loss_epoch1": ("train loss in epoch 1", False),
    "epochs_to_target": ("epochs to the target validation accuracy (censored at budget+1)", False),
    "epochs_used": ("epochs trained", False),
    "gap": ("train - test accuracy gap", False),
    "diverged": ("divergence rate (non-finite loss)", False),
    "grad_spread": ("log10(max/min) of per-layer gradient norms, epoch 1", False),
    "trials_to_target": ("trials to the target validation accuracy (never: budget+1)", False),
    "seconds_to_target": ("training seconds to the target (never: total x (budget+1)/budget)", False),
    "best_val": ("best validation accuracy of the study", True),
}


@dataclass(frozen=True)
class Arms:
    dimension: str
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # factor -> allowed values (as text)

    def describe(self) -> str:
        parts = [f"{k}={'|'.join(v) if len(v) > 1 else v[0]}" for k, v in self.where]
        return ",".join(parts) or "all arms"


def A(dimension: str, **where) -> Arms:  # noqa: N802 - reads like a table entry
    return Arms(dimension, tuple((k, tuple(str(x) for x in (v if isinstance(v, list) else [v]))) for k, v in where.items()))


@dataclass(frozen=True)
class Contrast:
    label: str
    treatment: Arms
    control: Arms
    metric: str
    expected: int  # predicted sign of treatment - control
    margin: float | None = None
    stated: float | None = None
    workloads: tuple[str, ...] | None = None
    minus: tuple[Arms, Arms] | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    advice: str  # our paraphrase
    expect: str
    contrasts: tuple[Contrast, ...] = ()
    post_numbers: str | None = None  # what the post reported, shown beside ours
    search: bool = False  # judged from the search studies (C25-C28)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _embedding_bounds_note() -> str:
    """C02's arms side by side: glorot_uniform's bound depends on the vocabulary, and at a
    small one it nearly equals uniform's 0.05 (both draw the same numbers from a seed's
    stream, scaled), so the note says where the two arms differ at all."""
    dim = RunConfig.model_fields["embed_dim"].default
    bounds = {name: (6 / (vocab + dim)) ** 0.5 for name, vocab in TOKEN_VOCABS.items()}
    parts = [f"±{b:.3f} at vocabulary {TOKEN_VOCABS[name]:,} ({name})" for name, b in bounds.items()]
    widest = max(bounds.values())
    return (f"glorot_uniform draws an embedding (dim {dim}) from ±sqrt(6 / (vocabulary + dim)): "
            + ", ".join(parts) + ", against uniform's ±0.05. The two arms draw the same numbers from a "
            f"seed's stream, scaled: at ±{widest:.3f} they are nearly one init, so the word-sized "
            f"vocabulary ({0.05 / min(bounds.values()):.1f}x narrower than uniform) is where the advice can show.")


# Every penalty arm of the l2 / l1 grids but 0: "the best penalty > 0" picks among them.
L2_ON = ["1e-05", "0.0001", "0.001", "0.01", "0.1", "1.0", "10.0"]
L1_ON = ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"]
GOOD_INITS = ["xavier_uniform", "xavier_normal", "kaiming_normal", "orthogonal"]
ADAPTIVE = ["adagrad", "adadelta", "rmsprop", "adam"]
CNN_INIT = ("fmnist_cnn", "mnist_cnn")
SOFTMAX_INIT = ("fmnist_softmax", "mnist_softmax")

CLAIMS: tuple[Claim, ...] = (
    Claim("C01", "A CNN initialised from a plain normal distribution ends far worse than with Xavier/Glorot init.",
          "xavier >> normal(0,1)",
          (Contrast("xavier_uniform vs normal(0,1)", A("init", init="xavier_uniform"), A("init", init="normal_1"),
                    "final_test_acc", +1, stated=0.28, workloads=CNN_INIT),
           Contrast("xavier_normal vs normal(0,1)", A("init", init="xavier_normal"), A("init", init="normal_1"),
                    "final_test_acc", +1, workloads=CNN_INIT)),
          post_numbers="MNIST CNN: normal init ~70% accuracy, Xavier ~98% (a 28-point gap)"),
    Claim("C02", "Embeddings initialised with glorot_uniform train slowly and end worse than with plain uniform init.",
          "uniform > glorot_uniform",
          (Contrast("uniform(-0.05,0.05) vs glorot_uniform: epochs to target", A("embed_init", embed_init="uniform_0.05"),
                    A("embed_init", embed_init="glorot_uniform"), "epochs_to_target", -1),
           Contrast("uniform(-0.05,0.05) vs glorot_uniform: accuracy", A("embed_init", embed_init="uniform_0.05"),
                    A("embed_init", embed_init="glorot_uniform"), "final_test_acc", +1)),
          notes=_embedding_bounds_note()),
    Claim("C03", "Softmax regression: normal init is near chance after one epoch and poor after many; zero init is good at once.",
          "zeros >> normal(0,1)",
          (Contrast("zeros vs normal(0,1) after epoch 1", A("init", init="zeros"), A("init", init="normal_1"),
                    "test_acc_epoch1", +1, stated=0.75, workloads=SOFTMAX_INIT),
           Contrast("zeros vs normal(0,1) at the end", A("init", init="zeros"), A("init", init="normal_1"),
                    "final_test_acc", +1, stated=0.32, workloads=SOFTMAX_INIT)),
          post_numbers="MNIST softmax regression: normal init ~10% after epoch 1 and ~60% after 20; zero init >85% after 1 and ~92% after 20"),
    Claim("C04", "Regression with plain SGD: lr 0.1 trains (slowly) while lr 0.3 makes the loss NaN within a few epochs.",
          "a stability edge between 0.1 and 0.3",
          (Contrast("divergence at lr 0.3 vs lr 0.1", A("lr_regression", lr=0.3), A("lr_regression", lr=0.1), "diverged", +1),),
          post_numbers="SGD on a regression task: lr 0.1 trained slowly, lr 0.3 gave a NaN loss after a few epochs"),
    Claim("C05", "Good initialisation speeds convergence a lot and avoids poor local minima.",
          "good inits reach the target in fewer epochs",
          (Contrast("best good init vs normal(0,1): epochs to target", A("init", init=GOOD_INITS), A("init", init="normal_1"),
                    "epochs_to_target", -1),
           Contrast("best good init vs normal(0,1): accuracy", A("init", init=GOOD_INITS), A("init", init="normal_1"),
                    "final_test_acc", +1))),
    Claim("C06", "Prefer ReLU in hidden layers: it avoids the vanishing gradients of sigmoid/tanh and converges faster.",
          "relu fastest; sigmoid worst, more so with depth",
          (Contrast("relu vs sigmoid, 1 hidden layer (each at its best init)", A("activation", activation="relu", depth=1),
                    A("activation", activation="sigmoid", depth=1), "final_test_acc", +1),
           Contrast("relu vs sigmoid, 6 hidden layers (each at its best init)", A("activation", activation="relu", depth=6),
                    A("activation", activation="sigmoid", depth=6), "final_test_acc", +1),
           Contrast("relu vs tanh: epochs to target, 6 layers (each at its best init)", A("activation", activation="relu", depth=6),
                    A("activation", activation="tanh", depth=6), "epochs_to_target", -1),
           Contrast("sigmoid's deficit grows with depth (6 vs 1 layers)", A("activation", activation="relu", depth=6),
                    A("activation", activation="sigmoid", depth=6), "final_test_acc", +1,
                    minus=(A("activation", activation="relu", depth=1), A("activation", activation="sigmoid", depth=1))))),
    Claim("C07", "Recurrent networks: prefer tanh.", "tanh best",
          (Contrast("tanh vs relu", A("rnn_activation", activation="tanh"), A("rnn_activation", activation="relu"), "final_test_acc", +1),
           Contrast("tanh vs sigmoid", A("rnn_activation", activation="tanh"), A("rnn_activation", activation="sigmoid"), "final_test_acc", +1))),
    Claim("C08", "Output layer: softmax for multi-class, sigmoid for binary, linear for regression.",
          "the stated head is at least as good (within 1 point / non-inferior)",
          (Contrast("multi-class: softmax vs sigmoid", A("head_classification", head="softmax"), A("head_classification", head="sigmoid"),
                    "final_test_acc", +1, margin=0.01, workloads=("fmnist_mlp", "digits_mlp")),
           Contrast("multi-class: softmax vs linear", A("head_classification", head="softmax"), A("head_classification", head="linear"),
                    "final_test_acc", +1, margin=0.01, workloads=("fmnist_mlp", "digits_mlp")),
           Contrast("binary: sigmoid vs softmax", A("head_classification", head="sigmoid"), A("head_classification", head="softmax"),
                    "final_test_acc", +1, margin=0.01, workloads=("digits_binary", "fmnist_binary")),
           Contrast("binary: sigmoid vs linear", A("head_classification", head="sigmoid"), A("head_classification", head="linear"),
                    "final_test_acc", +1, margin=0.01, workloads=("digits_binary", "fmnist_binary")),
           Contrast("regression: linear vs sigmoid (test MSE)", A("head_regression", head="linear"), A("head_regression", head="sigmoid"),
                    "final_test_loss", -1))),
    Claim("C09", "Start the learning rate at 0.1 or 0.01; too large is unstable or NaN, too small learns too slowly.",
          "best SGD lr in [0.01, 0.1]; the edges fail as described",
          (Contrast("SGD: best lr in [0.01, 0.1] vs best lr outside", A("lr", optimizer="sgd", lr=[0.01, 0.03, 0.1]),
                    A("lr", optimizer="sgd", lr=[0.0001, 0.0003, 0.001, 0.003, 0.3, 1.0, 3.0]), "final_test_acc", +1, margin=0.005),
           Contrast("SGD: lr 3 diverges more than lr 0.1", A("lr", optimizer="sgd", lr=3.0), A("lr", optimizer="sgd", lr=0.1), "diverged", +1),
           Contrast("SGD: lr 1e-4 leaves a higher epoch-1 loss than lr 0.01", A("lr", optimizer="sgd", lr=0.0001),
                    A("lr", optimizer="sgd", lr=0.01), "loss_epoch1", +1))),
    Claim("C10", "Decay the learning rate (x0.1, 0.3 or 0.5, all fine), on a plateau or after fixed epochs.",
          "any decay > constant; the three factors about equal",
          tuple(Contrast(f"{s} vs constant", A("schedule", schedule=s), A("schedule", schedule="constant"), "final_test_acc", +1)
                for s in ("step_0.1", "step_0.3", "step_0.5", "plateau_0.1", "plateau_0.3", "plateau_0.5"))),
    Claim("C11", "If train is good but test poor, raise the L2 penalty; 1.0 is the usual first choice, above 10 is rare.",
          "L2 narrows the gap; 1.0 is a good value",
          (Contrast("best L2 > 0 vs none: gap", A("l2", l2=L2_ON), A("l2", l2="0.0"), "gap", -1),
           Contrast("L2 = 1.0 vs none: test accuracy", A("l2", l2="1.0"), A("l2", l2="0.0"), "final_test_acc", +1),
           # As C12's: the L2 a practitioner would keep (best on validation) against none.
           Contrast("best L2 > 0 vs none: test accuracy", A("l2", l2=L2_ON),
                    A("l2", l2="0.0"), "final_test_acc", +1)),
          notes="Convention: loss += l2 * sum(w^2) over weight matrices, added to the mean cross-entropy (Keras' kernel_regularizer)."),
    Claim("C12", "Likewise, raising the L1 penalty counters overfitting.", "L1 narrows the gap",
          (Contrast("best L1 > 0 vs none: gap", A("l1", l1=L1_ON), A("l1", l1="0.0"), "gap", -1),
           Contrast("best L1 > 0 vs none: test accuracy", A("l1", l1=L1_ON), A("l1", l1="0.0"),
                    "final_test_acc", +1))),
    Claim("C13", "Raise dropout to counter overfitting; 0.5 is the usual first choice.", "dropout narrows the gap; 0.5 near best",
          (Contrast("dropout 0.5 vs 0: gap", A("dropout", dropout=0.5), A("dropout", dropout=0.0), "gap", -1),
           Contrast("dropout 0.5 vs best p: test accuracy", A("dropout", dropout=0.5), A("dropout", dropout=[0.0, 0.1, 0.25, 0.75]),
                    "final_test_acc", +1, margin=0.01))),
    Claim("C14", "Stop training early when held-out performance stops improving.", "equal or better accuracy for fewer epochs",
          (Contrast("patience 2 vs fixed budget: test accuracy", A("early_stopping", patience=2), A("early_stopping", patience="None"),
                    "final_test_acc", +1, margin=0.005),
           Contrast("patience 2 vs fixed budget: epochs", A("early_stopping", patience=2), A("early_stopping", patience="None"), "epochs_used", -1))),
    Claim("C15", "The most effective cure for overfitting is more training data.", "more data beats any regulariser",
          (Contrast("4x data, no regulariser vs best regulariser (L2, L1 or dropout) at 1/4 data",
                    A("data_fraction", train_fraction=1.0), A("l2"), "final_test_acc", +1),
           Contrast("4x data vs best dropout", A("data_fraction", train_fraction=1.0), A("dropout"), "final_test_acc", +1),
           Contrast("4x data vs best L1", A("data_fraction", train_fraction=1.0), A("l1"), "final_test_acc", +1))),
    Claim("C16", "Data augmentation (crops, flips, shifts) usually raises final test accuracy.", "augmentation > none (flips on digits?)",
          tuple(Contrast(f"{a} vs none", A("augmentation", augment=a), A("augmentation", augment="none"), "final_test_acc", +1)
                for a in ("shift", "flip", "both"))),
    Claim("C17", "On sparse data, use an adaptive method (Adagrad, Adadelta, RMSprop, Adam).", "adaptive > SGD",
          (Contrast("best adaptive vs best SGD (lr tuned)", A("sparse_optimizer", optimizer=ADAPTIVE), A("sparse_optimizer", optimizer="sgd"),
                    "final_test_acc", +1),
           Contrast("best adaptive vs SGD at default lr", A("sparse_optimizer", optimizer=ADAPTIVE, lr="default"),
                    A("sparse_optimizer", optimizer="sgd", lr="default"), "final_test_acc", +1))),
    Claim("C18", "Overall, Adam is the best optimizer choice.", "adam best or tied-best, at default and at tuned lr",
          (Contrast("adam vs the best other, lr tuned", A("optimizer", optimizer="adam"),
                    A("optimizer", optimizer=["sgd", "momentum", "adagrad", "adadelta", "rmsprop"]), "final_test_acc", +1, margin=0.005),
           Contrast("adam vs the best other, default lr", A("optimizer", optimizer="adam", lr="default"),
                    A("optimizer", optimizer=["sgd", "momentum", "adagrad", "adadelta", "rmsprop"], lr="default"), "final_test_acc", +1,
                    margin=0.005))),
    Claim("C19", "SGD reaches a minimum but takes longer than the others.", "sgd slowest",
          (Contrast("sgd vs adam: epochs to target (lr tuned)", A("optimizer", optimizer="sgd"), A("optimizer", optimizer="adam"),
                    "epochs_to_target", +1),
           Contrast("sgd vs momentum: epochs to target (lr tuned)", A("optimizer", optimizer="sgd"), A("optimizer", optimizer="momentum"),
                    "epochs_to_target", +1))),
    Claim("C20", "For faster convergence, or deeper networks, use an adaptive method.", "adaptive's lead grows with depth",
          (Contrast("adam vs sgd at depth 8 (best lr and init each)", A("optimizer_depth", optimizer="adam", depth=8), A("optimizer_depth", optimizer="sgd", depth=8),
                    "final_test_acc", +1),
           Contrast("adam's lead at depth 8 minus at depth 1 (best lr and init each)", A("optimizer_depth", optimizer="adam", depth=8),
                    A("optimizer_depth", optimizer="sgd", depth=8), "final_test_acc", +1,
                    minus=(A("optimizer_depth", optimizer="adam", depth=1), A("optimizer_depth", optimizer="sgd", depth=1))))),
    Claim("C21", "Residual blocks let you train deeper networks.", "plain degrades with depth, residual does not",
          (Contrast("residual vs plain at depth 16 (best init each)", A("residual", residual=True, depth=16), A("residual", residual=False, depth=16),
                    "final_test_acc", +1),
           Contrast("plain: depth 16 vs depth 2 (best init each)", A("residual", residual=False, depth=16), A("residual", residual=False, depth=2),
                    "final_test_acc", -1),
           Contrast("residual: depth 16 vs depth 2 (no loss; best init each)", A("residual", residual=True, depth=16), A("residual", residual=True, depth=2),
                    "final_test_acc", +1, margin=0.01))),
    Claim("C22", "Batch normalisation speeds up training.", "BN reaches the target in fewer epochs",
          (Contrast("BN vs none: epochs to target (best lr and init each)", A("batchnorm", batchnorm=True), A("batchnorm", batchnorm=False),
                    "epochs_to_target", -1),
           Contrast("BN vs none at lr 0.05: epochs to target (best init each)", A("batchnorm", batchnorm=True, lr=0.05), A("batchnorm", batchnorm=False, lr=0.05),
                    "epochs_to_target", -1))),
    Claim("C23", "Batch normalisation prevents vanishing and exploding gradients.", "BN keeps layer gradient norms in a narrow band",
          (Contrast("BN vs none: spread of layer gradient norms (lr 0.05, best init each)", A("batchnorm", batchnorm=True, lr=0.05),
                    A("batchnorm", batchnorm=False, lr=0.05), "grad_spread", -1),)),
    Claim("C24", "Batch normalisation also reduces overfitting.", "BN narrows the train-test gap",
          (Contrast("BN vs none: gap (lr 0.05, best init each)", A("batchnorm", batchnorm=True, lr=0.05), A("batchnorm", batchnorm=False, lr=0.05), "gap", -1),)),
    Claim("C25", "Grid search costs too much time; few combinations can be afforded.", "grid needs the most trials and seconds", search=True),
    Claim("C26", "Random search works better than grid search.", "random >= grid at equal budgets", search=True),
    Claim("C27", "Random search with coarse-to-fine refinement near the best points works well.", "coarse-to-fine >= random", search=True),
    Claim("C28", "Bayesian optimisation needs fewer iterations than grid search.", "TPE/GP reach the target in fewer trials", search=True),
    Claim("C29", "Debug from the simplest model: if it underfits, enlarge it; if it overfits, add data or regularise.",
          "bigger models cure underfitting; more data cures overfitting",
          (Contrast("width 512 vs 8: train accuracy (all data)", A("model_size", width=512, train_fraction=1.0),
                    A("model_size", width=8, train_fraction=1.0), "final_train_acc", +1),
           Contrast("all data vs 10%: gap (width 512)", A("model_size", width=512, train_fraction=1.0),
                    A("model_size", width=512, train_fraction=0.1), "gap", -1),
           Contrast("all data vs 10%: test accuracy (width 512)", A("model_size", width=512, train_fraction=1.0),
                    A("model_size", width=512, train_fraction=0.1), "final_test_acc", +1))),
)

BY_ID = {c.id: c for c in CLAIMS}


def dimension_claims(dimension: str) -> list[str]:
    """The ids of the claims whose contrasts read `dimension`."""
    return [c.id for c in CLAIMS if any(x.treatment.dimension == dimension for x in c.contrasts)]


def figure_group(figure: str) -> str:
    """The group a report figure belongs to, named by the claims that read it: "verdicts",
    "search-<name>" (C25-C28) or "<dimension>-<kind>" (the claims reading that dimension)."""
    if figure == "verdicts":
        return "Verdicts"
    if figure.startswith("search-"):
        return "C25-C28: search"
    dimension = figure.rsplit("-", 1)[0]
    ids = dimension_claims(dimension)
    return f"{', '.join(ids)}: {dimension}" if ids else dimension
