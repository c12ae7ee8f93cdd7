"""Classification metrics from labels and probabilities (numpy and scikit-learn):
accuracy, top-k, macro F1, per-class accuracy, the confusion matrix, the worst mistakes."""

import numpy as np


def softmax(logits):
    """Row-wise softmax, in float64 (scipy's: stable for any logit size)."""
    from scipy import special

    return special.softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def cross_entropy(labels, logits):
    """Mean categorical cross-entropy of integer `labels` under `logits` (no label
    smoothing), from scipy's log-softmax (no probabilities clipped, as log_loss would)."""
    from scipy import special

    log_probabilities = special.log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def top_k_accuracy(labels, probabilities, k):
    """Fraction of rows whose true label is among the `k` highest probabilities."""
    from sklearn import metrics

    probabilities = np.asarray(probabilities)
    if k >= probabilities.shape[-1]:
        return 1.0  # every class is in the top k (scikit-learn warns that this is meaningless)
    return float(metrics.top_k_accuracy_score(labels, probabilities, k=k,
                                              labels=np.arange(probabilities.shape[-1])))


def classification_metrics(labels, probabilities, class_names):
    """Accuracy, top-5, macro and per-class precision/recall/F1, confusion matrix and the
    scikit-learn classification report, as plain JSON-ready Python values."""
    from sklearn import metrics

    labels = np.asarray(labels)
    predicted = np.argmax(probabilities, axis=-1)
    class_ids = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    matrix = metrics.confusion_matrix(labels, predicted, labels=class_ids)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            # Per-class accuracy is the fraction of that class's images classified right,
            # which is its recall; kept under its own name for readers who look for it.
            "accuracy": float(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "test_images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "top5_accuracy": top_k_accuracy(labels, probabilities, min(5, len(class_names))),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classification_report": metrics.classification_report(
            labels, predicted, labels=class_ids, target_names=list(class_names),
            digits=4, zero_division=0,
        ),
    }


def normalise_rows(matrix):
    """Confusion matrix -> fraction of each true class (rows with no images stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def most_confident_mistakes(labels, probabilities, count):
    """Indices of wrong predictions, most confident first."""
    predicted = np.argmax(probabilities, axis=-1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    confidence = np.asarray(probabilities)[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]
