import numpy as np
from numpy.typing import NDArray

def suffix_array(text: NDArray[np.int32], out: NDArray[np.int32], alphabet: int, /) -> None: ...
