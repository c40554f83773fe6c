"""How much more defects vary from batch to batch than chance alone would make them.

Units of one batch share more than the factors a root-cause analysis names: the same
hour of the same machine, the same bag of parts, the same set-up. So defects cluster by
batch, and a test that counts units as independent trials is far too confident: with
the batch-to-batch variation of a real plant (a log-odds SD of 1.5 between batches) a
plain exact test finds a "cause" in a third of analyses of plants that have none.

The remedy is the quasi-binomial one. The **dispersion** ``phi`` is the Pearson
chi-square of the batches' defective counts about their product's rate, divided by its
degrees of freedom (McCullagh & Nelder, *Generalized Linear Models*, 2nd ed., §4.5): 1
for binomial data, more when batches differ. Every variance of a test is multiplied by
it (a score z divided by ``sqrt(phi)``), which is testing on ``units / phi`` effective
units — in a clustered plant the sample is nearer the batches than the units.

The dispersion is estimated for each factor with the factor in the model — the batches
exposed to it about their own rate, the others about theirs (batches exposed to causes
already accepted are set aside): a real cause's own excess then does not inflate the
yardstick it is measured by, while exposed batches that differ wildly among themselves
(one bad batch among many good) do.

A constant multiplier is not enough when batch rates have the long tail real plants
show: one batch at 30 times the median is a 2.3-SD event on the log scale, but looks
like a 7-SD one to a z divided by ``sqrt(phi)``. So where the dispersion is significant
(Pearson chi-square, one-sided p < :data:`OVERDISPERSED`), a factor must also stand out
**on batches**: the rank-sum test of its exposed batches' defect rates against the
others', within products (van Elteren's stratified Wilcoxon test, normal approximation
with the tie correction). Its p-value counts batches, not units: defects of one bad
batch are one piece of evidence however many they are.

>>> import numpy as np
>>> from scipy import sparse
>>> d = BatchDispersion.of(np.array([0, 1, 2, 3]), np.zeros(4, int), np.full(4, 100.0),
...                        np.array([0.0, 10.0, 0.0, 10.0]))
>>> round(d.overall(), 2)
7.02
>>> x = sparse.csr_matrix(np.array([[0.0], [1.0], [0.0], [0.0]]))
>>> round(float(d.phi(x, [0])[0]), 2)  # batch 1 left out: 0, 0 and 10 of 100
10.34
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

OVERDISPERSED = 0.01
"""The Pearson test level at which batches count as varying more than chance."""

BLAME_ROUNDS = 20
"""Rounds of expectation-maximisation that share an assembly's defect among the origin
batches of its items (:meth:`BatchDispersion.of_origin`)."""

EXACT_BATCHES = 6
"""Up to this many exposed batches in a stratum, the batch rank test is exact."""


@dataclass(frozen=True, slots=True)
class BatchCheck:
    """What the batches say of each tested factor."""

    phi: np.ndarray
    """The dispersion with the factor in the model (at least 1)."""
    overdispersed: np.ndarray
    """Whether that dispersion is significant at :data:`OVERDISPERSED`."""
    rank_p: np.ndarray
    """The one-sided p-value of the stratified rank-sum test of the exposed batches'
    defect rates against the others'."""

    def p_value(self, exact: np.ndarray, z: np.ndarray) -> np.ndarray:
        """A unit-level test's p-value (``exact``, with its score ``z``) corrected for the
        batches: no smaller than the normal p-value of ``z / sqrt(phi)``, and where the
        batches are overdispersed, no smaller than the rank test's either."""
        quasi = stats.norm.sf(z / np.sqrt(self.phi))
        found = np.where(self.phi > 1.0, np.maximum(exact, quasi), exact)
        return np.asarray(np.where(self.overdispersed, np.maximum(found, self.rank_p), found))


@dataclass(frozen=True, slots=True)
class BatchDispersion:
    """Cells of a root-cause population grouped into the batches that made them."""

    member: sparse.csr_matrix
    """Batches by cells: 1 where the cell's units came from the batch."""
    moments: np.ndarray
    """Per batch and stratum, the sums the Pearson statistic needs: columns ``3 s``,
    ``3 s + 1``, ``3 s + 2`` hold units, defectives and defectives²/units of stratum
    ``s`` (zero for a batch of another stratum)."""
    stratum: np.ndarray
    """Each batch's stratum."""
    rate: np.ndarray
    """Each batch's defect rate (NaN for a batch with no unit here)."""
    independent: bool = False
    """Treat units as independent trials (no correction): the baseline the batch
    correction is measured against."""
    own: sparse.csr_matrix | None = None
    """Batches by factors: 1 where the batch itself was exposed (:meth:`of_origin`);
    None when a batch is exposed through its cells."""

    @classmethod
    def of(
        cls,
        batch: np.ndarray,
        stratum: np.ndarray,
        n: np.ndarray,
        k: np.ndarray,
        *,
        independent: bool = False,
    ) -> BatchDispersion:
        """``batch`` and ``stratum`` index each cell's batch and product; ``n`` and ``k``
        are its units and defective units."""
        cells = len(batch)
        batches = int(batch.max()) + 1 if cells else 0
        member = sparse.csr_matrix(
            (np.ones(cells), (batch, np.arange(cells))), shape=(batches, cells)
        )
        bn, bk = member @ n, member @ k
        # a batch belongs to the stratum of its cells (a batch makes one product)
        of_batch = np.zeros(batches, dtype=np.int64)
        of_batch[batch] = stratum
        strata = int(stratum.max()) + 1 if cells else 0
        moments = np.zeros((batches, 3 * strata))
        square = np.divide(bk**2, bn, out=np.zeros_like(bk), where=bn > 0)
        for s in range(strata):
            mine = of_batch == s
            moments[:, 3 * s] = bn * mine
            moments[:, 3 * s + 1] = bk * mine
            moments[:, 3 * s + 2] = square * mine
        rate = np.divide(bk, bn, out=np.full_like(bk, np.nan), where=bn > 0)
        return cls(member, moments, of_batch, rate, independent)

    @classmethod
    def of_origin(
        cls,
        member: sparse.csr_matrix,
        stratum: np.ndarray,
        n: np.ndarray,
        k: np.ndarray,
        own: sparse.csr_matrix,
    ) -> BatchDispersion:
        """The batches of the defect's origin, each counted once however many levels
        of assembly its items reached: ``member`` (origin batches by cells) holds the
        share of each cell's origin-level items that came from each batch, ``own``
        (origin batches by factors) each batch's own exposure, ``stratum`` each cell's
        product, ``n`` and ``k`` its units and defective units.

        A cell's units count towards its origin batches by those shares, in units of
        its own product standardised to the plant's rate (``n`` times its product's
        defect rate over the overall rate), so a pack and a cell weigh by what each
        would be expected to show; every origin batch is then one piece of evidence —
        its defects against what its items would have had at their products' rates —
        in one stratum, ranked and tested as such.

        Which of a pack's cells failed is not recorded, so a defective assembly's
        defect is shared among its origin batches by their shares *and their defect
        rates* — the expectation-maximisation estimate of the multi-membership model
        (:data:`BLAME_ROUNDS` rounds from equal rates): shared by items alone, a wild
        cell batch's defects would spill over the neighbouring batches packed with it,
        and a lot that fed those neighbours would inherit them."""
        total_n, total_k = float(n.sum()), float(k.sum())
        overall = total_k / total_n if total_n > 0 else 0.0
        strata = int(stratum.max()) + 1 if len(stratum) else 0
        s_n = np.bincount(stratum, weights=n, minlength=strata)
        s_k = np.bincount(stratum, weights=k, minlength=strata)
        rate = np.divide(s_k, s_n, out=np.zeros(strata), where=s_n > 0)
        scaled = n * np.divide(rate[stratum], overall, out=np.zeros(len(n)), where=overall > 0)
        member = member.tocsr()
        bn = member @ scaled
        bk = member @ k  # the first round: from equal rates, shares by items alone
        for _ in range(BLAME_ROUNDS - 1):
            # smoothed towards the plant's rate by one expected defect
            guess = (bk + overall) / (bn + 1.0)
            # each cell's defects shared by its items times their batch's rate
            weighted = sparse.diags(guess) @ member
            total = np.asarray(weighted.sum(axis=0)).ravel()
            share = np.divide(k, total, out=np.zeros_like(total), where=total > 0)
            bk = weighted @ share
        square = np.divide(bk**2, bn, out=np.zeros_like(bk), where=bn > 0)
        moments = np.column_stack([bn, bk, square])
        rates = np.divide(bk, bn, out=np.full_like(bk, np.nan), where=bn > 0)
        return cls(member, moments, np.zeros(len(bn), dtype=np.int64), rates, own=own.tocsr())

    def exposed(self, x: sparse.csr_matrix, columns: Sequence[int]) -> sparse.csr_matrix:
        """Batches by ``columns`` of ``x`` (cells by factors): 1 where the batch was
        exposed — any of its cells, or the batch itself for origin batches."""
        if self.own is not None:
            return self.own[:, list(columns)].astype(np.float64).tocsr()
        return ((self.member @ x[:, list(columns)]) > 0).astype(np.float64).tocsr()

    def overall(self) -> float:
        """The dispersion over every batch (1 when units are taken as independent)."""
        if self.independent:
            return 1.0
        counted = (self.moments[:, 0::3] > 0).astype(np.float64)
        chi2, df = _pearson(self.moments.sum(axis=0)[None, :], counted.sum(axis=0)[None, :])
        return float(_ratio(chi2, df)[0])

    def check(
        self, x: sparse.csr_matrix, columns: Sequence[int], given: Sequence[int] = ()
    ) -> BatchCheck:
        """The batches' verdict on each of ``columns`` of ``x`` (cells by factors), the
        batches exposed to any of the columns ``given`` set aside."""
        if self.independent:
            m = len(columns)
            return BatchCheck(np.ones(m), np.zeros(m, dtype=bool), np.zeros(m))
        keep = np.ones(len(self.rate), dtype=bool)
        if given:
            keep = np.asarray(self.exposed(x, given).sum(axis=1)).ravel() == 0
        exposed = self.exposed(x, columns)
        (chi2_in, df_in), (chi2_out, df_out) = self._pearson_with(exposed, keep)
        # overdispersed among the exposed batches (one wild batch among ordinary ones)
        # or among the rest (a plant whose batches vary, whatever the factor)
        varies = (_significant(chi2_in, df_in)) | (_significant(chi2_out, df_out))
        return BatchCheck(
            _ratio(chi2_in + chi2_out, df_in + df_out), varies, self._rank_p(exposed, keep)
        )

    def phi(
        self, x: sparse.csr_matrix, columns: Sequence[int], given: Sequence[int] = ()
    ) -> np.ndarray:
        """The dispersion for each of ``columns`` of ``x`` (cells by factors) with the
        column in the model, the batches exposed to any of ``given`` set aside."""
        return self.check(x, columns, given).phi

    def _pearson_with(
        self, exposed: sparse.csr_matrix, keep: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The Pearson statistics of the exposed batches about their own rate, and of
        the others about theirs."""
        moments = self.moments * keep[:, None]
        counted = (moments[:, 0::3] > 0).astype(np.float64)
        # the exposed batches, and the rest: the total less the exposed
        inside = np.asarray(exposed.T @ moments)
        inside_count = np.asarray(exposed.T @ counted)
        outside = moments.sum(axis=0)[None, :] - inside
        outside_count = counted.sum(axis=0)[None, :] - inside_count
        return _pearson(inside, inside_count), _pearson(outside, outside_count)

    def _rank_p(self, exposed: sparse.csr_matrix, keep: np.ndarray) -> np.ndarray:
        """The rank-sum test of the exposed batches' rates within strata. A factor on
        few batches (at most :data:`EXACT_BATCHES` in each stratum it touches) gets the
        exact permutation p-value of its rank sum — ties make the normal one far too
        small there: a lone bad batch among good ones is 1 in the batches, not a
        6-sigma event —, over several strata Bonferroni-combined; any other, van
        Elteren's normal approximation (per stratum weighted by 1/(batches + 1)) with
        the tie correction."""
        m = exposed.shape[1]
        shift, variance = np.zeros(m), np.zeros(m)
        best, touched = np.ones(m), np.zeros(m)
        small = np.ones(m, dtype=bool)
        live = keep & np.isfinite(self.rate)
        for s in np.unique(self.stratum[live]):
            mine = live & (self.stratum == s)
            total = int(mine.sum())
            if total < 2:
                continue
            ranks = np.zeros(len(self.rate))
            ranks[mine] = stats.rankdata(self.rate[mine])
            _, ties = np.unique(self.rate[mine], return_counts=True)
            tie = float((ties**3 - ties).sum()) / (total * (total - 1))
            count = np.asarray(exposed.T @ mine.astype(np.float64)).ravel()
            rank_sum = np.asarray(exposed.T @ ranks).ravel()
            weight = 1.0 / (total + 1)
            shift += weight * (rank_sum - count * (total + 1) / 2)
            variance += weight**2 * count * (total - count) / 12 * ((total + 1) - tie)
            # exact tails for the factors with few batches here (mid-ranks doubled are
            # whole numbers)
            few = (count > 0) & (count <= EXACT_BATCHES)
            small &= (count == 0) | few
            if few.any():
                tails = _rank_sum_tails(np.rint(2 * ranks[mine]).astype(np.int64), EXACT_BATCHES)
                c = count[few].astype(np.int64)
                w = np.minimum(np.rint(2 * rank_sum[few]).astype(np.int64), tails.shape[1] - 1)
                best[few] = np.minimum(best[few], 1 - tails[c, w])  # P(sum >= w)
                touched[few] += 1
        z = np.divide(shift, np.sqrt(variance), out=np.zeros(m), where=variance > 0)
        normal = np.where(variance > 0, stats.norm.sf(z), 1.0)
        # Bonferroni over the strata a small factor touches: the smallest stratum
        # p-value times their number
        bonferroni = np.minimum(1.0, touched * best)
        return np.asarray(np.where(small & (touched > 0), bonferroni, normal))


def _rank_sum_tails(ranks2: np.ndarray, most: int) -> np.ndarray:
    """``tails[c, w]``: the probability that ``c`` batches drawn at random (without
    replacement) have doubled rank sum *below* ``w``, for ``c`` up to ``most`` — the
    exact permutation law, by counting subsets one batch at a time."""
    most = min(most, len(ranks2))
    size = int(np.sort(ranks2)[len(ranks2) - most :].sum()) + 2
    counts = np.zeros((most + 1, size))
    counts[0, 0] = 1.0
    for r in ranks2:
        counts[1:, r:] += counts[:-1, : size - r].copy()
    total = counts.sum(axis=1, keepdims=True)
    below = np.cumsum(counts, axis=1) - counts  # P(sum < w), unnormalised
    tails = np.zeros((EXACT_BATCHES + 1, size))
    tails[: most + 1] = below / total
    return tails


def _pearson(sums: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Pearson chi-square of batches about their stratum's rate, and its degrees of
    freedom, for each row of per-stratum ``sums`` (units, defectives,
    defectives²/units) over ``count`` batches. A stratum with no defective (or no good)
    unit says nothing of dispersion and is left out."""
    units, bad, square = sums[:, 0::3], sums[:, 1::3], sums[:, 2::3]
    live = (bad > 0.5) & (units - bad > 0.5) & (count > 1.5)
    rate = np.divide(bad, units, out=np.zeros_like(bad), where=live)
    chi2 = np.divide(square - bad * rate, rate * (1 - rate), out=np.zeros_like(bad), where=live)
    return chi2.sum(axis=1), np.where(live, count - 1, 0).sum(axis=1)


def _significant(chi2: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Whether the chi-square exceeds chance at :data:`OVERDISPERSED`."""
    p = stats.chi2.sf(chi2, np.maximum(df, 1))
    return np.asarray((df > 0) & (p < OVERDISPERSED))


def _ratio(chi2: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Chi-square over degrees of freedom, at least 1 (less is chance, not
    underdispersion worth trusting)."""
    phi = np.divide(chi2, df, out=np.ones(len(df)), where=df > 0)
    return np.asarray(np.maximum(phi, 1.0))
