import torch

from mldoctor_bench.data import four_quarters, load_dataset
from mldoctor_bench.store import ModelStore
from mldoctor_bench.training import Recipe, TrainJob, accuracy, seeded_model, train_classifier

RECIPE = Recipe(epochs=8, batch_size=32, lr_milestones=())


def job_and_data(seed=0):
    data = load_dataset("mnist5k", None)
    splits = four_quarters(len(data), 0, quarter_size=200)
    job = TrainJob("target", "simple_cnn", RECIPE, seed, data.fingerprint(), splits.digest("target_train"))
    idx = splits.target_train
    return job, data, data.images[idx], data.labels[idx], splits


def test_training_learns_and_is_deterministic():
    job, data, x, y, splits = job_and_data()
    a = train_classifier(seeded_model(job, data), x, y, RECIPE, seed=1)
    b = train_classifier(seeded_model(job, data), x, y, RECIPE, seed=1)
    assert accuracy(a, x, y) > 0.3  # 10 classes: chance is 0.1
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_store_trains_once_then_reuses(tmp_path):
    job, data, x, y, _ = job_and_data()
    store = ModelStore(tmp_path)
    calls = []

    def fit(model):
        calls.append(1)
        train_classifier(model, x, y, RECIPE, seed=1)
        return {"train_accuracy": accuracy(model, x, y)}

    first = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    second = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    assert len(calls) == 1 and not first.reused and second.reused
    for pa, pb in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(pa, pb)
    other = TrainJob("target", "simple_cnn", RECIPE, 1, job.dataset_fingerprint, job.indices_digest)
    store.get_or_train(other.cache_key_payload(), lambda: seeded_model(other, data), fit)
    assert len(calls) == 2  # another seed is another model
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
