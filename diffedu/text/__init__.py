"""Part 3: text. Discrete diffusion, a masked diffusion LM on Shakespeare, and its autoregressive twin.

    tokenizer   characters + a mask token; random windows from the corpus split by play
    discrete    D3PM transition matrices Q_t (uniform, absorbing), products, posteriors  (lesson 09)
    model       one transformer: bidirectional (diffusion) or causal (its twin)            (lesson 10)
    masked      log-linear schedule, forward masking, the MDLM loss, ELBO in bits/char     (lesson 10)
    samplers    ancestral, low-confidence remasking, semi-AR blocks, infilling          (lesson 10)
    autoregressive  the twin: exact chain-rule likelihood, decoding with a KV cache      (lesson 11)
    speculative the diffusion LM drafts, the twin verifies, exactly                    (lesson 14)
    genre       First Folio genres of the plays; the genre judge                       (lesson 15)
    guidance    classifier-free guidance in logit space; diversity measures           (lesson 15)
    uniform     uniform-noise diffusion (UDLM): forward, posterior, continuous-time ELBO, sampler
    gidd        masking and uniform noise mixed by one parameter; the jump-process ELBO; self-correcting sampler
    embedding   Gaussian diffusion on learned character embeddings, rounding, self-conditioning (Diffusion-LM)
    tasks       the training tasks of `python -m diffedu.train configs/text_*.json`
"""
from . import autoregressive, discrete, embedding, genre, gidd, guidance, masked, model, samplers, tokenizer, uniform
from .autoregressive import ar_bits_per_char, ar_generate
from .masked import elbo_bits_per_char, masked_diffusion_loss
from .model import Transformer, build_model
from .samplers import generate, infill
from .tokenizer import MASK_CHAR, CharTokenizer, shakespeare_tokenizer


def load_pretrained(name: str = "shakespeare_mdlm", device=None):
    """(model, tokenizer, card) for a shipped checkpoint: 'shakespeare_mdlm', 'shakespeare_ar', ... (assets/)."""
    from .tasks import load_text_model
    return load_text_model(name, device)
