"""An existing engine, tested: ``anfcodec.encode_file`` mapped over files with a local Dask cluster
(processes, one thread each), as the README suggests for clusters."""
import time

import pytest

import anfcodec
from anfcodec import container
from conftest import synthetic_image

distributed = pytest.importorskip("distributed")
db = pytest.importorskip("dask.bag")


def _threads():
    import torch
    return torch.get_num_threads()


def test_encode_file_over_a_dask_bag_of_processes(tmp_path):
    src = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        synthetic_image(64 + 16 * i, 48, seed=i).save(path)
        src.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    src.insert(1, broken)
    pairs = [(str(p), str(tmp_path / f"{p.stem}.anf")) for p in src]
    start = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert set(client.run(_threads).values()) == {1}      # one torch thread per worker process
        records = db.from_sequence(pairs, npartitions=4).starmap(anfcodec.encode_file, quality=1).compute()
    assert time.perf_counter() - start < 60
    assert [r.ok for r in records] == [True, False, True, True]       # the job finished past the bad file
    assert "not an image" in records[1].error and not (tmp_path / "broken.anf").exists()
    for (s, d), r in zip(pairs, records):
        if r.ok:
            data = open(d, "rb").read()
            assert data == anfcodec.encode(s, quality=1) and r.bytes == len(data)   # as in-process
            h = container.unpack(data).header
            assert anfcodec.decode(data).size == (h.width, h.height) and r.bpp == 8 * len(data) / (h.width * h.height)
