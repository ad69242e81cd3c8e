"""NEFTune (train.neftune_alpha): noise of the paper's size on training forwards, none anywhere else."""

import math

import torch
from tiny_models import tiny_qwen3

from lorakit.training import batching, loss


def sample(n, n_prompt, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (n,), generator=g).tolist()
    return {"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]}


SAMPLES = [sample(20, 5, 1), sample(10, 3, 2), sample(30, 20, 3)]


def test_noise_is_sized_by_the_mean_sample_length_packed_or_padded():
    embeds = torch.zeros(1, 60, 64)
    torch.manual_seed(0)
    noise = loss.neftune_noise(embeds, batching.pack(SAMPLES), alpha=5.0)
    bound = 5.0 / math.sqrt(20 * 64)  # mean length of 20, 10 and 30, not the row's 60
    assert noise.abs().max() <= bound and noise.abs().max() > 0.95 * bound
    padded = batching.pad(SAMPLES, pad_id=0)
    noise = loss.neftune_noise(torch.zeros(3, 30, 64), padded, alpha=5.0)
    assert noise.abs().max() <= bound and noise.abs().max() > 0.95 * bound


def test_only_training_forwards_are_noisy():
    model = tiny_qwen3()
    batch = batching.pack(SAMPLES)
    plain, noisy = loss.LossModule(model), loss.LossModule(model, neftune_alpha=5.0)
    model.train()
    torch.manual_seed(0)
    clean = plain(batch)
    torch.manual_seed(0)
    assert not torch.equal(noisy(batch), clean)  # a training forward: noise
    torch.manual_seed(0)
    assert torch.equal(plain(batch), clean)  # the noise-free module is untouched (same dropout draws)
    with torch.no_grad():  # eval loss: no grad, no noise, whatever the mode
        model.eval()
        assert torch.equal(noisy(batch), plain(batch))
    from contextlib import nullcontext

    model.train()  # evaluate_loss switches to eval mode itself
    assert loss.evaluate_loss(model, SAMPLES, 2, True, 0, "cpu", nullcontext()) == loss.evaluate_loss(
        noisy, SAMPLES, 2, True, 0, "cpu", nullcontext()
    )
