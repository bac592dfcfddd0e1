"""Networks of fastlift: the lifter G, the 2D and temporal discriminators, the domain adapter A."""
from fastlift.models.adapter import DomainAdapter
from fastlift.models.discriminators import KinematicFeatures, PoseDiscriminator, TemporalDiscriminator
from fastlift.models.lifter import Lifter
from fastlift.models.mlp import FastDropout, ResidualMLP

__all__ = ["ResidualMLP", "Lifter", "PoseDiscriminator", "TemporalDiscriminator", "KinematicFeatures",
           "DomainAdapter", "FastDropout"]
