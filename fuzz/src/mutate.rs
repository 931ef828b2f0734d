//! A small deterministic mutator, so the workspace tests can run the targets over inputs near
//! their seed corpora without libFuzzer (`tests/replay.rs`).
//!
//! Seeded, so a run is reproducible: the same seeds and the same seed number give the same
//! inputs. Each input is one to four of: bit flips, a random or "interesting" byte written,
//! truncation, deletion of a range, insertion of random bytes or of a token from a small
//! dictionary of what these parsers treat specially, duplication of a range, and splicing with
//! another seed.

/// Tokens the parsers treat specially: separators, escapes, YAML and JSON syntax, names with a
/// meaning, number edges.
const DICTIONARY: &[&[u8]] = &[
    b"/",
    b"%2F",
    b"%2e",
    b"%",
    b"..",
    b"?",
    b"&",
    b"=",
    b"watch=1",
    b"fieldSelector=metadata.name%3D",
    b"namespaces/",
    b"\n",
    b"\r\n",
    b": ",
    b", ",
    b"- ",
    b"  ",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"true",
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!str ",
    b"---\n",
    b"env:",
    b"file:",
    b"system:",
    b"impersonate-",
    b"connection: ",
    b"upgrade",
    b"Bearer ",
    b".",
    b"0",
    b"-1",
    b"18446744073709551615",
    b"9223372036854775808",
    b"1e999",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\x00",
];

/// A seeded xorshift generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % (n as u64)).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

/// Derives a mutated input from `seeds[pick]`, possibly spliced with another seed.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = seeds
        .get(rng.below(seeds.len()))
        .cloned()
        .unwrap_or_default();
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut data, seeds);
    }
    data.truncate(max_len);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = match rng.below(3) {
                0 => rng.byte(),
                1 => *b"\0\x7f\x80\xff /%.:\n".get(rng.below(11)).unwrap_or(&0),
                _ => data[at].wrapping_add(1),
            };
        }
        2 => data.truncate(rng.below(len + 1)),
        3 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(16)).min(len);
            data.drain(from..to);
        }
        4 => {
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..=rng.below(8)).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        5 | 6 => {
            let at = rng.below(len + 1);
            let token = DICTIONARY[rng.below(DICTIONARY.len())];
            data.splice(at..at, token.iter().copied());
        }
        7 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(32)).min(len);
            let chunk = data[from..to].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        _ => {
            // Splice: this input's head, another seed's tail.
            let Some(other) = seeds.get(rng.below(seeds.len())) else {
                return;
            };
            let head = rng.below(len + 1);
            let tail = rng.below(other.len() + 1);
            data.truncate(head);
            data.extend_from_slice(&other[tail..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let seeds = vec![b"GET /api/v1/pods".to_vec(), b"grants: []".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..100)
                .map(|_| mutate(&mut rng, &seeds, 1024))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn inputs_stay_under_the_limit() {
        let seeds = vec![vec![b'a'; 100]];
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert!(mutate(&mut rng, &seeds, 64).len() <= 64);
        }
    }
}
