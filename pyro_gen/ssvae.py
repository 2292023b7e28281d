"""The semi-supervised VAE, model M2 of Kingma, Rezende, Mohamed & Welling (2014), "Semi-Supervised
Learning with Deep Generative Models".

The class :math:`y` is a discrete latent variable of the generative model, observed for the
labelled images and inferred for the others:

.. math::

    p(y) = \\mathrm{Cat}(1/C), \\quad p(z) \\text{ (a prior of } :mod:`pyro_gen.priors`), \\quad
    p_\\theta(x \\mid y, z); \\qquad
    q_\\phi(y \\mid x) = \\mathrm{Cat}(\\pi_\\phi(x)), \\quad q_\\phi(z \\mid x, y).

A labelled pair contributes the ELBO of :math:`\\log p(x, y)`,
:math:`\\mathcal{L}(x, y) = E_{q(z|x,y)}[\\log p(x|y,z) + \\log p(y) + \\log p(z) - \\log q(z|x,y)]`;
an unlabelled image the ELBO of :math:`\\log p(x)` with :math:`y` summed out exactly,

.. math::

    \\mathcal{U}(x) = \\sum_{y} q(y \\mid x)\\,\\big[\\mathcal{L}(x, y) - \\log q(y \\mid x)\\big],

which Pyro computes by enumerating the guide's ``y`` site in parallel (``config_enumerate``)
under :class:`pyro.infer.TraceEnum_ELBO` (``ELBOS["enum"]``). Because :math:`q(y|x)` would
otherwise learn only from unlabelled data, the objective adds a classification term on the
labelled data with weight :math:`\\alpha` (Kingma et al. use :math:`\\alpha = 0.1 N`; the default here
is :math:`\\alpha = 10 N`, :func:`default_aux_weight`):

.. math::

    \\mathcal{J}^\\alpha = \\sum_{(x,y)\\,\\text{labelled}} \\mathcal{L}(x, y)
    + \\sum_{x\\,\\text{unlabelled}} \\mathcal{U}(x)
    + \\alpha\\, E_{\\text{labelled}}[\\log q(y \\mid x)],

put in the model as an observed site ``y_aux`` of :math:`q(y|x)`, scaled by
``aux_weight`` :math:`= \\alpha / N_\\text{labelled}` per labelled image.

Minibatches mix labelled and unlabelled images: a batch's labels are ``-1`` for the
unlabelled ones. Its plates over data are ``labelled`` and ``unlabelled`` (:attr:`SSVAE.data_plates`),
both scaled by the training engine by ``num_data / batch_size`` so that the batch objective is
unbiased for :math:`\\mathcal{J}^\\alpha` (:mod:`pyro_gen.handlers`; β scales every latent site). With
few labels most batches would hold none, so :func:`semi_supervised_data` may repeat the
labelled images ``r`` times and the model weighs each copy by ``labelled_weight`` :math:`= 1/r`:
the objective is unchanged, its variance much smaller.

Two extensions, both off by default in :func:`build_ssvae` (the CLI turns augmentation on):
``augment`` trains the classification term on randomly rotated, scaled and shifted copies of the
labelled images (:class:`~pyro_gen.augment.RandomAffine`), and ``aux_dim`` adds the auxiliary
latent of the ADGM (Maaløe et al. 2016). ``docs/objectives.rst`` has what each did on MNIST-10k.

The classifier :math:`q(y|x)` is :meth:`SSVAE.classify`; test accuracy is
:func:`accuracy`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from torch import nn

from .devices import module_device
from .augment import RandomAffine
from .guides import make_guide
from .likelihoods import make_likelihood, mean_image
from .nets import ConditionedEncoder, _concat, condition_vector, make_networks
from .priors import make_prior, sample_prior
from .vae import ModelSpec
from .errors import InputError

__all__ = ["SSVAE", "Classifier", "build_ssvae", "semi_supervised_labels", "semi_supervised_data",
           "SemiSupervisedData", "kingma_aux_weight", "default_aux_weight", "accuracy"]


def _scaled(scale: float):
    return contextlib.nullcontext() if scale == 1.0 else poutine.scale(scale=scale)


class Classifier(nn.Module):
    """:math:`q_\\phi(y \\mid x)`: an encoder body and a linear head giving the logits of ``C`` classes.

    :param body: an encoder body with ``out_features`` (:mod:`pyro_gen.nets`).
    :param num_classes: C.
    """

    def __init__(self, body: nn.Module, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SSVAE(nn.Module):
    """Model M2 as a Pyro model/guide pair (see the module's description).

    :param classifier: :math:`q(y|x)`, images -> logits ``(B, C)`` (:class:`Classifier`).
    :param guide: a guide family (:mod:`pyro_gen.guides`) on a
        :class:`~pyro_gen.nets.ConditionedEncoder`: :math:`q(z \\mid x, y)`, called with ``(x, y)``.
    :param decoder: a :class:`~pyro_gen.nets.ConditionedDecoder`, called with ``(z, y)``.
    :param prior: a prior over z (:mod:`pyro_gen.priors`).
    :param likelihood: a likelihood (:mod:`pyro_gen.likelihoods`).
    :param num_classes: C.
    :param aux_weight: weight of :math:`\\log q(y|x)` per labelled image (:math:`\\alpha / N_\\text{labelled}`).
    :param labelled_weight: weight of each copy of a labelled image (:math:`1/r` when the labelled
        images are repeated ``r`` times).
    :param aux_guide: :math:`q(a \\mid x)` of the ADGM (see :func:`build_ssvae`); ``None`` for M2.
    :param aux_model: :math:`p(a \\mid x, y, z)` of the ADGM, called with ``(x, [y; z])``.
    :param augment: a random transform of images (e.g. :class:`~pyro_gen.augment.RandomAffine`)
        applied to the labelled images of the classification term, which then scores
        :math:`E_T[\\log q(y \\mid T(x))]`; the ELBO terms see the images as they are.
    """

    #: The labels are (partly observed) latent variables, not side information: training reports
    #: the ELBO of :math:`\log p(x)` with them summed out (:func:`~pyro_gen.train.fit`).
    labels_are_latent = True
    #: The plates over data, which the training engine scales by the data-set size.
    data_plates = ("labelled", "unlabelled")

    def __init__(self, classifier: nn.Module, guide: nn.Module, decoder: nn.Module, prior: nn.Module,
                 likelihood: nn.Module, num_classes: int, aux_weight: float = 0.0, labelled_weight: float = 1.0, aux_guide: Optional[nn.Module] = None,
                 aux_model: Optional[nn.Module] = None, augment: Optional[nn.Module] = None):
        super().__init__()
        if (aux_guide is None) != (aux_model is None):
            raise InputError("an auxiliary latent needs both q(a|x) (aux_guide) and p(a|x,y,z) (aux_model)")
        if num_classes < 2:
            raise InputError(f"the semi-supervised VAE needs at least 2 classes, got {num_classes}")
        self.classifier = classifier
        self.guide_net = guide
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.num_classes = int(num_classes)
        self.aux_weight = float(aux_weight)
        self.labelled_weight = float(labelled_weight)
        self.aux_guide = aux_guide
        self.aux_model = aux_model
        self.augment = augment

    @property
    def has_aux(self) -> bool:
        """Whether the model has the auxiliary latent :math:`a` of the ADGM."""
        return self.aux_guide is not None

    @property
    def latent_dim(self) -> int:
        return self.prior().event_shape[0]

    def _label_prior(self, like: torch.Tensor) -> dist.Categorical:
        return dist.Categorical(logits=like.new_zeros(self.num_classes))

    @staticmethod
    def _split(x: torch.Tensor, y: Optional[torch.Tensor]):
        """``(x_labelled, y_labelled), x_unlabelled`` of a batch whose labels are -1 where missing."""
        if y is None:
            return (x[:0], None), x
        known = y >= 0
        return (x[known], y[known]), x[~known]

    def _side(self, y: torch.Tensor, a: Optional[torch.Tensor]):
        """The side vector of :math:`q(z \\mid x, y)`: the label, joined with :math:`a` in the ADGM."""
        return y if a is None else _concat(condition_vector(y, self.num_classes), a)

    def _logits(self, x: torch.Tensor, a: Optional[torch.Tensor]) -> torch.Tensor:
        """Logits of :math:`q(y \\mid x)`, or of :math:`q(y \\mid a, x)` in the ADGM."""
        return self.classifier(x if a is None else (x, a))

    def _sample_aux(self, name: str, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
        """:math:`a \\sim p(a \\mid x, y, z)` in the model (the ADGM); ``None`` without an auxiliary latent."""
        if not self.has_aux:
            return None
        return pyro.sample(name, self.aux_model((x, _concat(condition_vector(y, self.num_classes), z))))

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        """:math:`z \\sim p(z)`, :math:`y \\sim p(y)`, :math:`x \\sim p_\\theta(x \\mid y, z)` (and in the
        ADGM :math:`a \\sim p(a \\mid x, y, z)`), with ``y`` observed where the batch's label ``y``
        (shape ``(B,)``, ``-1`` = unknown) is known; the labelled images also score
        :math:`\\log q(y|x)` (:math:`\\log q(y|a,x)` in the ADGM) with weight ``aux_weight``."""
        (xl, yl), xu = self._split(x, y)
        if len(xl):
            with pyro.plate("labelled", len(xl)), _scaled(self.labelled_weight):
                z = pyro.sample("z_labelled", self.prior())
                pyro.sample("y_labelled", self._label_prior(x), obs=yl)
                pyro.sample("x_labelled", self.likelihood(self.decoder(z, yl)), obs=xl)
                a = self._sample_aux("a_labelled", xl, yl, z)
                if self.aux_weight > 0:
                    xa = xl if self.augment is None else self.augment(xl)
                    with poutine.scale(scale=self.aux_weight):
                        pyro.sample("y_aux", dist.Categorical(logits=self._logits(xa, a)), obs=yl)
        if len(xu):
            with pyro.plate("unlabelled", len(xu)):
                z = pyro.sample("z_unlabelled", self.prior())
                yu = pyro.sample("y_unlabelled", self._label_prior(x))
                pyro.sample("x_unlabelled", self.likelihood(self.decoder(z, yu)), obs=xu)
                self._sample_aux("a_unlabelled", xu, yu, z)

    def _guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        (xl, yl), xu = self._split(x, y)
        if len(xl):
            with pyro.plate("labelled", len(xl)), _scaled(self.labelled_weight):
                a = pyro.sample("a_labelled", self.aux_guide(xl)) if self.has_aux else None
                pyro.sample("z_labelled", self.guide_net((xl, self._side(yl, a))))
        if len(xu):
            with pyro.plate("unlabelled", len(xu)):
                a = pyro.sample("a_unlabelled", self.aux_guide(xu)) if self.has_aux else None
                yu = pyro.sample("y_unlabelled", dist.Categorical(logits=self._logits(xu, a)))
                pyro.sample("z_unlabelled", self.guide_net((xu, self._side(yu, a))))

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        """(ADGM: :math:`a \\sim q_\\phi(a \\mid x)`,) :math:`y \\sim q_\\phi(y \\mid x)` (:math:`q(y \\mid a, x)`;
        enumerated in parallel) for the unlabelled images, :math:`z \\sim q_\\phi(z \\mid x, y)`
        (:math:`q(z \\mid x, y, a)`) for all."""
        config_enumerate(self._guide, default="parallel")(x, y)

    def _aux_mean(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return self.aux_guide(x).mean if self.has_aux else None

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`q(y \\mid x)`, shape ``(B, C)``; in the ADGM :math:`q(y \\mid a, x)` at the mean of
        :math:`q(a \\mid x)`."""
        return torch.softmax(self._logits(x, self._aux_mean(x)), -1)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under :meth:`class_probs`, shape ``(B,)``."""
        return self._logits(x, self._aux_mean(x)).argmax(-1)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, num_samples: int, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Log importance weights of :math:`p(x)` with the proposal :math:`q(y|x)\\,q(z|x,y)`,

        .. math::

            \\log w_k = \\log p(y_k) + \\log p(z_k) + \\log p(x \\mid y_k, z_k)
            - \\log q(y_k \\mid x) - \\log q(z_k \\mid x, y_k),

        (in the ADGM with :math:`a_k \\sim q(a|x)` first, plus
        :math:`\\log p(a_k \\mid x, y_k, z_k) - \\log q(a_k \\mid x)`, and :math:`q(y|a_k,x)`,
        :math:`q(z|x,y_k,a_k)`), or, given labels ``y`` (all known), those of :math:`p(x \\mid y)`
        without the class terms. Shape ``(K, B)``; their mean is an unbiased estimate of the ELBO
        :math:`\\mathcal{U}(x)` (of :math:`\\mathcal{L}(x,y) - \\log p(y)` given ``y``).
        """
        k, b = num_samples, x.shape[0]
        qa = self.aux_guide(x) if self.has_aux else None
        a = None if qa is None else qa.sample((k,))
        if y is None:
            qy = dist.Categorical(logits=self._logits(x, a))
            # drawn as Pyro draws an expanded site, so that the generic path makes the same draws
            ys = qy.sample() if self.has_aux else qy.expand(torch.Size((k,)) + qy.batch_shape).sample()
            extra = self._label_prior(x).log_prob(ys) - qy.log_prob(ys)
        else:
            if y.numel() and int(y.min()) < 0:
                raise InputError("log_weights with labels needs every label known (no -1)")
            ys, extra = y.expand(k, b), 0.0
        qz = self.guide_net((x, self._side(ys, a)))
        z = qz.sample()
        logw = self.prior().log_prob(z) + self.likelihood(self.decoder(z, ys)).log_prob(x) - qz.log_prob(z) + extra
        if qa is not None:
            pa = self.aux_model((x, _concat(condition_vector(ys, self.num_classes), z)))
            logw = logw + pa.log_prob(a) - qa.log_prob(a)
        return logw

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_samples: int = 256, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mean of :math:`q(z \\mid x, y)`, with ``y`` the classifier's guess when not given
        (in the ADGM at the mean of :math:`q(a \\mid x)`)."""
        a = self._aux_mean(x)
        q = self.guide_net((x, self._side(self.classify(x) if y is None else y, a)))
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((num_samples,)).mean(0)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The likelihood's mean image of each code and label."""
        return mean_image(self.likelihood, self.decoder(z, y), generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean image of :math:`p(x \\mid y, z = E_q[z])`, ``y`` the classifier's guess when not given."""
        y = self.classify(x) if y is None else y
        return self.decode(self.encode(x, y=y), y)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean images of ``n`` codes from the prior, image ``i`` of class ``y[i]`` (default ``i % C``)."""
        device = module_device(self)
        y = torch.arange(n, device=device) % self.num_classes if y is None else y.to(device)
        return self.decode(sample_prior(self.prior, n, generator).to(device), y, generator)


def build_ssvae(spec: ModelSpec, aux_weight: float = 0.0,
                labelled_weight: float = 1.0, aux_dim: int = 0, classifier_net: Optional[str] = None,
                augment: bool = False) -> SSVAE:
    """Build an :class:`SSVAE` from a :class:`~pyro_gen.vae.ModelSpec` whose ``condition_dim``
    is the number of classes: :math:`q(z|x,y)` and :math:`p(x|y,z)` are the spec's networks
    conditioned on the one-hot class, :math:`q(y|x)` a second encoder body with a linear head.

    With ``aux_dim > 0`` the model is the auxiliary deep generative model (ADGM) of Maaløe et al.
    (2016): M2 with an auxiliary latent :math:`a` of that size, :math:`q(a|x)` (a diagonal Gaussian
    on an encoder body), the classifier :math:`q(y|a,x)` and :math:`q(z|x,y,a)` see :math:`a` as a
    side vector, and the model scores it with :math:`p(a|x,y,z)` (a diagonal Gaussian on an
    encoder body of :math:`x` joined with :math:`[y; z]`). The generative model of :math:`x` is
    M2's; :math:`a` makes :math:`q(y|x) = E_{q(a|x)}[q(y|a,x)]` a richer family.

    :param spec: the networks, likelihood, guide family and prior (the ``vamp`` prior is not
        available: its components would need a class).
    :param aux_weight: see :class:`SSVAE`.
    :param labelled_weight: see :class:`SSVAE`.
    :param aux_dim: size of the auxiliary latent :math:`a` (0: plain M2).
    :param classifier_net: network kind of the classifier's body, ``"mlp"`` or ``"conv"``
        (default: the spec's ``net``).
    :param augment: train the classification term on randomly rotated, scaled and shifted
        labelled images (:class:`~pyro_gen.augment.RandomAffine` with its defaults).
    """
    if aux_dim < 0:
        raise InputError(f"aux_dim must be >= 0, got {aux_dim}")
    shape, classes = tuple(spec.image_shape), spec.condition_dim

    def nets(kind=spec.net, condition_dim=0):
        return make_networks(kind, shape, spec.latent_dim, spec.hidden, condition_dim=condition_dim,
                             activation=spec.activation)

    encoder, decoder = nets(condition_dim=classes)
    body = nets(classifier_net or spec.net)[0]
    aux_guide = aux_model = None
    if aux_dim:
        encoder = nets(condition_dim=classes + aux_dim)[0]
        body = ConditionedEncoder(body, aux_dim)
        aux_guide = make_guide("diagonal", nets()[0], aux_dim)
        aux_model = make_guide("diagonal", ConditionedEncoder(nets()[0], classes + spec.latent_dim), aux_dim)
    return SSVAE(classifier=Classifier(body, classes), guide=make_guide(spec.guide, encoder, spec.latent_dim),
                 decoder=decoder, prior=make_prior(spec.prior, spec.latent_dim),
                 likelihood=make_likelihood(spec.likelihood), num_classes=classes, aux_weight=aux_weight, labelled_weight=labelled_weight,
                 aux_guide=aux_guide, aux_model=aux_model, augment=RandomAffine() if augment else None)


def semi_supervised_labels(y: np.ndarray, labels_per_class: int, seed: int = 0) -> np.ndarray:
    """Keep ``labels_per_class`` labels of each class, chosen at random with ``seed``, and mark
    the others unknown (``-1``).

    :param y: integer labels ``(N,)``.
    :raises ValueError: if a class has fewer images than ``labels_per_class``.
    """
    rng = np.random.default_rng(seed)
    out = np.full(len(y), -1, dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < labels_per_class:
            raise InputError(f"class {c} has {len(members)} images, fewer than the {labels_per_class} labels per class "
                             f"asked for")
        out[rng.choice(members, labels_per_class, replace=False)] = c
    return out


def kingma_aux_weight(num_data: int, num_labelled: int) -> float:
    """The classification weight per labelled image of Kingma et al. (2014):
    :math:`\\alpha / N_\\text{labelled}` with :math:`\\alpha = 0.1 N`."""
    return 0.1 * num_data / num_labelled


def default_aux_weight(num_data: int, num_labelled: int) -> float:
    """pyro_gen's default classification weight per labelled image, :math:`\\alpha / N_\\text{labelled}`
    with :math:`\\alpha = 10 N`, a hundred times Kingma et al.'s: with 100 labels of 9,000 MNIST
    images their weight let the unlabelled term pull the classifier to classes that are not the
    digits (49-63% test accuracy), this one keeps it on them (see ``docs/objectives.rst``)."""
    return 10.0 * num_data / num_labelled


@dataclass
class SemiSupervisedData:
    """Training data for :class:`SSVAE`: images ``x``, labels ``y`` (``-1`` = unknown) with each
    labelled image repeated ``repeat`` times, and the model weights that keep
    :math:`\\mathcal{J}^\\alpha` unchanged.

    :param x: images ``(N + (repeat - 1) N_l, C, H, W)``.
    :param y: labels of the same length.
    :param num_labelled: :math:`N_l`, distinct labelled images.
    :param repeat: copies of each labelled image.
    :param aux_weight: the classification weight per labelled image (:func:`default_aux_weight`).
    """

    x: np.ndarray
    y: np.ndarray
    num_labelled: int
    repeat: int
    aux_weight: float

    @property
    def labelled_weight(self) -> float:
        return 1.0 / self.repeat


def semi_supervised_data(x: np.ndarray, y: np.ndarray, labels_per_class: int, seed: int = 0,
                         repeat: Optional[int] = None) -> SemiSupervisedData:
    """Keep ``labels_per_class`` labels per class (:func:`semi_supervised_labels`) and repeat the
    labelled images so that they make up about half of each epoch (``repeat`` = round(N_u / N_l),
    at least 1), unless ``repeat`` is given: the classifier then sees labelled images in every
    minibatch, as many steps as a classifier trained on them alone would take.

    :param x: training images ``(N, C, H, W)``.
    :param y: their labels ``(N,)``.
    """
    kept = semi_supervised_labels(y, labels_per_class, seed)
    known = np.flatnonzero(kept >= 0)
    n_l, n_u = len(known), len(kept) - len(known)
    if repeat is None:
        repeat = max(1, int(round(n_u / n_l))) if n_l else 1
    if repeat < 1:
        raise InputError(f"repeat must be a positive integer, got {repeat}")
    extra = np.tile(known, repeat - 1)
    return SemiSupervisedData(x=np.concatenate([x, x[extra]]), y=np.concatenate([kept, kept[extra]]),
                              num_labelled=n_l, repeat=repeat, aux_weight=default_aux_weight(len(x), max(n_l, 1)))


@torch.no_grad()
def accuracy(model: SSVAE, x: torch.Tensor, y, batch_size: int = 1000) -> float:
    """Share of images whose most probable class under :math:`q(y|x)` is their label."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    y = torch.as_tensor(np.asarray(y), device=device)
    hits = sum(int((model.classify(x[i:i + batch_size].to(device)) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    model.train(was_training)
    return hits / len(x)
