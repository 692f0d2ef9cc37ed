"""The bibliography: every work the report may cite, by key. The report numbers the works it
cites in the order it first cites them and lists only those."""
from __future__ import annotations

REFERENCES: dict[str, str] = {
    "wilson1927": "E. B. Wilson. Probable Inference, the Law of Succession, and Statistical "
                  "Inference. <i>Journal of the American Statistical Association</i> 22(158), 1927.",
    "mcnemar1947": "Q. McNemar. Note on the Sampling Error of the Difference Between Correlated "
                   "Proportions or Percentages. <i>Psychometrika</i> 12(2), 1947.",
    "newcombe1998": "R. G. Newcombe. Improved Confidence Intervals for the Difference Between "
                    "Binomial Proportions Based on Paired Data. <i>Statistics in Medicine</i> "
                    "17(22), 1998.",
    "he2016deep": "K. He, X. Zhang, S. Ren, J. Sun. Deep Residual Learning for Image "
                  "Recognition. <i>CVPR</i>, 2016.",
    "he2016identity": "K. He, X. Zhang, S. Ren, J. Sun. Identity Mappings in Deep Residual "
                      "Networks. <i>ECCV</i>, 2016.",
    "krizhevsky2009": "A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. "
                      "Technical report, University of Toronto, 2009.",
    "lippe2022": "P. Lippe. Practical 2: Convolutional Neural Networks. UvA Deep Learning "
                 "Course tutorials, 2022.",
    "ioffe2015": "S. Ioffe, C. Szegedy. Batch Normalization: Accelerating Deep Network Training "
                 "by Reducing Internal Covariate Shift. <i>ICML</i>, 2015.",
    "paszke2019": "A. Paszke et al. PyTorch: An Imperative Style, High-Performance Deep "
                  "Learning Library. <i>NeurIPS</i>, 2019.",
    "falcon2019": "W. Falcon and the PyTorch Lightning team. PyTorch Lightning, 2019.",
    "cohen2016": "T. Cohen, M. Welling. Group Equivariant Convolutional Networks. <i>ICML</i>, "
                 "2016.",
    "kingma2015": "D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. "
                  "<i>ICLR</i>, 2015.",
    "loshchilov2019": "I. Loshchilov, F. Hutter. Decoupled Weight Decay Regularization. "
                      "<i>ICLR</i>, 2019.",
}
