"""How ranks split an optimizer step's micro-batches, with and without FSDP."""

from lorakit.training.distributed import Distributed


def shares(world: int, n: int, fsdp: bool) -> list[list[tuple[int, int]]]:
    out = []
    for rank in range(world):
        dist = Distributed(rank, world)
        dist.fsdp = fsdp
        out.append(dist.share(list(range(n))))
    return out


def test_data_parallel_gives_each_micro_batch_to_one_rank():
    assert shares(2, 3, fsdp=False) == [[(0, 1), (2, 1)], [(1, 1)]]


def test_fsdp_pads_short_ranks_with_zero_weight_so_all_run_the_same_forwards():
    per_rank = shares(2, 3, fsdp=True)
    assert per_rank == [[(0, 1), (2, 1)], [(1, 1), (0, 0)]]
    assert sorted(mb for share in per_rank for mb, w in share if w) == [0, 1, 2]
    assert shares(3, 1, fsdp=True) == [[(0, 1)], [(0, 0)], [(0, 0)]]
