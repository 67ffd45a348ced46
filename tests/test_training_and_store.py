from dataclasses import replace

import pytest
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


def test_a_reloaded_model_answers_as_the_freshly_trained_one_bit_for_bit(tmp_path):
    from mldoctor_bench.inference import predict_logits

    job, data, x, y, splits = job_and_data()
    store = ModelStore(tmp_path)

    def fit(model):
        train_classifier(model, x, y, RECIPE, seed=1)  # trains channels-last
        return {}

    fresh = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    reloaded = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    assert not fresh.reused and reloaded.reused
    queries = data.images[splits.target_test]
    assert torch.equal(predict_logits(fresh.model, queries), predict_logits(reloaded.model, queries))
    # both in the layout training leaves (queries on contiguous weights took twice as long on CPU)
    for model in (fresh.model, reloaded.model):
        convs = [p for p in model.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_a_model_trained_in_the_contiguous_layout_is_reloaded_in_it(tmp_path):
    """The store records the layout a model was trained in (a GAN trains contiguous, a classifier
    channels-last) and reloads it so, so that its reload computes what it computed."""
    from mldoctor_bench.inference import CONTIGUOUS, layout_of

    job, data, *_ = job_and_data()
    store = ModelStore(tmp_path)
    fresh = store.get_or_train({"contiguous": 1}, lambda: seeded_model(job, data), lambda model: {})
    reloaded = store.get_or_train({"contiguous": 1}, lambda: seeded_model(job, data), lambda model: {})
    assert reloaded.reused and layout_of(fresh.model) == layout_of(reloaded.model) == CONTIGUOUS


def test_store_trains_only_the_missing_models_together_and_records_their_time(tmp_path):
    job, data, x, y, _ = job_and_data()
    jobs = [
        TrainJob(role, "simple_cnn", RECIPE, seed, job.dataset_fingerprint, job.indices_digest)
        for role, seed in [("a", 1), ("b", 2), ("c", 3)]
    ]
    store = ModelStore(tmp_path)
    store.get_or_train(
        jobs[1].cache_key_payload(), lambda: seeded_model(jobs[1], data), lambda m: {"train_accuracy": 0.0}
    )
    batches = []

    def fit(models, which, keep):
        batches.append(list(which))
        for m in models:
            train_classifier(m, x, y, RECIPE, seed=1)
        return [{"n": float(i)} for i in which]

    stored = store.get_or_train_many(
        [j.cache_key_payload() for j in jobs],
        lambda i: seeded_model(jobs[i], data),
        fit,
        images_seen=[len(x) * RECIPE.epochs] * 3,
    )
    assert batches == [[0, 2]]  # the stored one is loaded, the other two trained in one call
    assert [s.reused for s in stored] == [False, True, False]
    for s in (stored[0], stored[2]):
        assert s.manifest["trained_together"] == 2 and s.manifest["train_seconds"] > 0
        expected = len(x) * RECIPE.epochs / s.manifest["train_seconds"]
        assert s.manifest["images_per_second"] == pytest.approx(expected, rel=0.01)
    assert stored[2].manifest["metrics"] == {"n": 2.0}


def test_a_group_keeps_the_models_it_finished_when_interrupted(tmp_path):
    job, data, x, y, _ = job_and_data()
    jobs = [TrainJob(f"r{k}", "simple_cnn", RECIPE, k, job.dataset_fingerprint, job.indices_digest) for k in range(4)]
    payloads = [j.cache_key_payload() for j in jobs]
    store = ModelStore(tmp_path)

    def fit(models, which, keep):
        keep(0, {"n": 0.0}, 2.0)  # the first finished: stored at once, with its own seconds
        keep(1, {"n": 1.0}, 3.0)
        raise KeyboardInterrupt  # Ctrl-C while the other two train

    with pytest.raises(KeyboardInterrupt):
        store.get_or_train_many(payloads, lambda i: seeded_model(jobs[i], data), fit, images_seen=[600] * 4)
    assert [store.holds(store.key(p)) for p in payloads] == [True, True, False, False]
    trained = []
    stored = store.get_or_train_many(
        payloads, lambda i: seeded_model(jobs[i], data), lambda m, which, keep: trained.extend(which) or [{}, {}]
    )
    assert trained == [2, 3] and [s.reused for s in stored] == [True, True, False, False]
    assert stored[1].manifest["train_seconds"] == 3.0 and stored[1].manifest["images_per_second"] == 200.0
    assert stored[1].manifest["metrics"] == {"n": 1.0} and stored[1].manifest["trained_together"] == 4


def test_a_store_without_a_folder_still_trains_a_model_once_per_process():
    job, data, x, y, _ = job_and_data()
    store, calls = ModelStore(None), []

    def fit(model):
        calls.append(1)
        return {}

    first = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    second = store.get_or_train(job.cache_key_payload(), lambda: seeded_model(job, data), fit)
    assert calls == [1] and not first.reused and second.reused and second.model is first.model


def test_engine_settings_do_not_change_a_models_key_but_precision_does():
    job, *_ = job_and_data()
    base = job.cache_key_payload()
    for change in ({"batch_models": "off"}, {"compile": True}, {"deterministic": True}):
        assert replace(job, recipe=replace(RECIPE, **change)).cache_key_payload() == base
    assert replace(job, recipe=replace(RECIPE, precision="bf16")).cache_key_payload() != base
    assert RECIPE.resolved(torch.device("cpu")).precision == "fp32"
    assert RECIPE.resolved(torch.device("cuda")).precision == "bf16"


def test_bf16_training_on_cpu_learns_like_fp32():
    job, data, x, y, _ = job_and_data()
    accs = {}
    for precision in ("fp32", "bf16"):
        model = train_classifier(seeded_model(job, data), x, y, replace(RECIPE, precision=precision), seed=1)
        accs[precision] = accuracy(model, x, y)
    assert accs["fp32"] > 0.3 and abs(accs["fp32"] - accs["bf16"]) < 0.15, accs


@pytest.mark.slow
def test_compiled_training_matches_eager_and_compiles_once_per_architecture():
    from mldoctor_bench import training

    job, data, x, y, _ = job_and_data()
    recipe = replace(RECIPE, epochs=1, precision="fp32")
    eager = train_classifier(seeded_model(job, data), x, y, recipe, seed=1)
    compiled = [
        train_classifier(seeded_model(job, data), x, y, replace(recipe, compile=True), seed=1) for _ in range(2)
    ]
    signatures = [k for k in training._COMPILED if k[0] == "Classifier"]
    assert len(signatures) == 1  # the second model reused the first one's compiled function
    for model in compiled:
        for a, b in zip(eager.parameters(), model.parameters()):
            assert torch.allclose(a, b, atol=1e-4)
