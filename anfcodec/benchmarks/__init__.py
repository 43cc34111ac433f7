"""The measurements behind ``anfcodec bench`` (docs/RESULTS.md quotes them); no codec path imports these.

rd           RD curves and BD-rates against the classical codecs (the default bench)
generations  re-encoding: decode and re-encode N times, PSNR after each generation
highrate     the top qualities and the near-lossless layer against JPEG XL, AVIF, WebP, PNG
speed        time and peak memory per image size, against mbt2018-mean at equal width
memorybound  where whole-image coding would pass the 2 GB bound (tiling starts there)
tilecost     the rate that coding as tiles costs against whole-image coding
floor        the work of coding and the least time the machine's arithmetic allows
"""
