use serde::Serialize;

/// SplitMix64: tiny, fast and fixed forever, so seeds keep their meaning across versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5E72_5E72_5E72_5E72)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident => $w:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "lowercase")]
        #[allow(missing_docs)]
        pub enum $name { $($v),+ }
        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The word used in captions.
            pub fn word(self) -> &'static str {
                match self { $($name::$v => $w),+ }
            }
        }
    };
}

word_enum!(
    /// Object shapes.
    Shape { Circle => "circle", Square => "square", Triangle => "triangle", Diamond => "diamond" }
);
word_enum!(
    /// Object colours.
    Colour { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", Purple => "purple", Orange => "orange" }
);
word_enum!(
    /// Object sizes.
    Size { Small => "small", Medium => "medium", Large => "large" }
);

impl Colour {
    /// Display colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 170, 50],
            Colour::Blue => [30, 60, 220],
            Colour::Yellow => [240, 220, 30],
            Colour::Purple => [140, 40, 170],
            Colour::Orange => [250, 140, 20],
        }
    }
}

/// Background names and colours.
pub const BACKGROUNDS: &[(&str, [u8; 3])] = &[
    ("white", [245, 245, 245]),
    ("black", [20, 20, 20]),
    ("grey", [128, 128, 128]),
    ("beige", [225, 210, 175]),
    ("sky blue", [170, 210, 240]),
    ("pale green", [190, 230, 190]),
];

const CELLS: [&str; 9] = [
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
];

/// One object: shape, colour, size and grid cell (0..9, row-major 3x3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    /// Size.
    pub size: Size,
    /// Cell of the 3x3 grid.
    pub cell: u8,
}

impl Object {
    fn name(&self) -> String {
        format!("{} {}", self.colour.word(), self.shape.word())
    }
}

/// A scene: background and objects in distinct cells; no two objects share colour and
/// shape, so "the red circle" always names one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scene {
    /// Index into [`BACKGROUNDS`].
    pub background: u8,
    /// The objects.
    pub objects: Vec<Object>,
}

impl Scene {
    /// A random scene of one to three objects.
    pub fn random(rng: &mut Rng) -> Scene {
        let mut scene = Scene {
            background: rng.below(BACKGROUNDS.len()) as u8,
            objects: Vec::new(),
        };
        let n = 1 + rng.below(3);
        while scene.objects.len() < n {
            let o = Object {
                shape: rng.pick(Shape::ALL),
                colour: rng.pick(Colour::ALL),
                size: rng.pick(Size::ALL),
                cell: rng.below(9) as u8,
            };
            if scene.fits(&o, None) {
                scene.objects.push(o);
            }
        }
        scene
    }

    /// Whether `o` can join (or replace object `except`) without clashing.
    fn fits(&self, o: &Object, except: Option<usize>) -> bool {
        self.objects.iter().enumerate().all(|(i, p)| {
            Some(i) == except || (p.cell != o.cell && (p.shape, p.colour) != (o.shape, o.colour))
        })
    }

    fn free_cells(&self) -> Vec<u8> {
        (0..9u8)
            .filter(|c| self.objects.iter().all(|o| o.cell != *c))
            .collect()
    }

    /// Equal as the captions see it: same background and the same objects in any order.
    pub fn same_as(&self, other: &Scene) -> bool {
        self.background == other.background
            && self.objects.len() == other.objects.len()
            && self.objects.iter().all(|o| other.objects.contains(o))
    }

    /// The scene in words.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .objects
            .iter()
            .map(|o| {
                format!(
                    "a {} {} at the {}",
                    o.size.word(),
                    o.name(),
                    CELLS[o.cell as usize]
                )
            })
            .collect();
        format!(
            "{} on a {} background",
            parts.join(" and "),
            BACKGROUNDS[self.background as usize].0
        )
    }
}

/// One edit of a scene, as a composed query's modification text describes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Modification {
    /// Recolour object `i`.
    Recolour(usize, Colour),
    /// Change the shape of object `i`.
    Reshape(usize, Shape),
    /// Make object `i` bigger (true) or smaller.
    Resize(usize, bool),
    /// Move object `i` to a cell.
    Move(usize, u8),
    /// Add an object.
    Add(Object),
    /// Remove object `i`.
    Remove(usize),
    /// New background.
    Background(u8),
}

impl Modification {
    /// A random edit that makes sense for `scene` (it may still fail to apply).
    pub fn random(scene: &Scene, rng: &mut Rng) -> Modification {
        let i = rng.below(scene.objects.len());
        match rng.below(7) {
            0 => Modification::Recolour(i, rng.pick(Colour::ALL)),
            1 => Modification::Reshape(i, rng.pick(Shape::ALL)),
            2 => Modification::Resize(i, rng.below(2) == 0),
            3 => Modification::Move(i, rng.below(9) as u8),
            4 => Modification::Add(Object {
                shape: rng.pick(Shape::ALL),
                colour: rng.pick(Colour::ALL),
                size: rng.pick(Size::ALL),
                cell: rng.below(9) as u8,
            }),
            5 => Modification::Remove(i),
            _ => Modification::Background(rng.below(BACKGROUNDS.len()) as u8),
        }
    }

    /// The edited scene, or `None` when the edit changes nothing or clashes.
    pub fn apply(&self, scene: &Scene, _rng: &mut Rng) -> Option<Scene> {
        let mut s = scene.clone();
        let replace = |s: &mut Scene, i: usize, o: Object| -> Option<()> {
            (s.fits(&o, Some(i)) && s.objects[i] != o).then(|| s.objects[i] = o)
        };
        match *self {
            Modification::Recolour(i, c) => replace(
                &mut s,
                i,
                Object {
                    colour: c,
                    ..scene.objects[i]
                },
            )?,
            Modification::Reshape(i, sh) => replace(
                &mut s,
                i,
                Object {
                    shape: sh,
                    ..scene.objects[i]
                },
            )?,
            Modification::Resize(i, bigger) => {
                let size = match (s.objects[i].size, bigger) {
                    (Size::Small, true) => Size::Medium,
                    (Size::Medium, true) => Size::Large,
                    (Size::Medium, false) => Size::Small,
                    (Size::Large, false) => Size::Medium,
                    _ => return None,
                };
                replace(
                    &mut s,
                    i,
                    Object {
                        size,
                        ..scene.objects[i]
                    },
                )?
            }
            Modification::Move(i, cell) => replace(
                &mut s,
                i,
                Object {
                    cell,
                    ..scene.objects[i]
                },
            )?,
            Modification::Add(o) => {
                if s.objects.len() >= 4 || !s.fits(&o, None) {
                    return None;
                }
                s.objects.push(o);
            }
            Modification::Remove(i) => {
                if s.objects.len() < 2 {
                    return None;
                }
                s.objects.remove(i);
            }
            Modification::Background(b) => {
                if b == s.background {
                    return None;
                }
                s.background = b;
            }
        }
        Some(s)
    }

    /// A text-only decoy: the unrelated scene `other` made to satisfy what the caption
    /// asks for (the edited object, the added object or the new background), so it matches
    /// the modification text but not the reference. `None` when it cannot be made to fit.
    pub fn decoy(&self, target: &Scene, other: &Scene, rng: &mut Rng) -> Option<Scene> {
        let mut s = other.clone();
        let wanted = match *self {
            Modification::Recolour(i, _)
            | Modification::Reshape(i, _)
            | Modification::Resize(i, _)
            | Modification::Move(i, _) => target.objects[i],
            Modification::Add(o) => o,
            Modification::Background(b) => {
                if s.background == b {
                    return None;
                }
                s.background = b;
                return Some(s);
            }
            // "remove the X" is true of most scenes; a scene without the object will do.
            Modification::Remove(_) => return Some(s),
        };
        // Replace a random object when the scene is full or the new one clashes with it.
        if s.objects.len() < 4 && s.fits(&wanted, None) {
            s.objects.push(wanted);
        } else {
            let j = rng.below(s.objects.len());
            if !s.fits(&wanted, Some(j)) {
                return None;
            }
            s.objects[j] = wanted;
        }
        Some(s)
    }

    /// The modification text, naming objects as they are in `reference`.
    pub fn caption(&self, reference: &Scene) -> String {
        let name = |i: usize| reference.objects[i].name();
        match *self {
            Modification::Recolour(i, c) => format!("make the {} {}", name(i), c.word()),
            Modification::Reshape(i, sh) => format!("turn the {} into a {}", name(i), sh.word()),
            Modification::Resize(i, true) => format!("make the {} bigger", name(i)),
            Modification::Resize(i, false) => format!("make the {} smaller", name(i)),
            Modification::Move(i, cell) => {
                format!("move the {} to the {}", name(i), CELLS[cell as usize])
            }
            Modification::Add(o) => format!(
                "add a {} {} at the {}",
                o.size.word(),
                o.name(),
                CELLS[o.cell as usize]
            ),
            Modification::Remove(i) => format!("remove the {}", name(i)),
            Modification::Background(b) => {
                format!("change the background to {}", BACKGROUNDS[b as usize].0)
            }
        }
    }
}

/// A CIRCO-style query: "add a <size> <colour> <shape>" without saying where, so every
/// free cell gives a valid target (2 to 4 of them are rendered).
pub(crate) fn multi_target_add(
    reference: &Scene,
    rng: &mut Rng,
) -> Option<(Vec<Scene>, String, String)> {
    let shape = rng.pick(Shape::ALL);
    let colour = rng.pick(Colour::ALL);
    let size = rng.pick(Size::ALL);
    let mut free = reference.free_cells();
    if free.len() < 2 || reference.objects.len() >= 3 {
        return None;
    }
    let n = 2 + rng.below(3).min(free.len() - 2);
    let mut targets = Vec::new();
    for _ in 0..n {
        let cell = free.remove(rng.below(free.len()));
        let o = Object {
            shape,
            colour,
            size,
            cell,
        };
        if !reference.fits(&o, None) {
            return None;
        }
        let mut t = reference.clone();
        t.objects.push(o);
        targets.push(t);
    }
    let caption = format!(
        "add a {} {} {} anywhere",
        size.word(),
        colour.word(),
        shape.word()
    );
    Some((
        targets,
        caption,
        format!("a {} {}", colour.word(), shape.word()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoy satisfies the caption (it holds the edited or added object, or the new
    /// background) and is neither the reference nor the target.
    #[test]
    fn decoys_satisfy_the_text_only() {
        let mut rng = Rng::new(5);
        let mut made = 0;
        for _ in 0..400 {
            let reference = Scene::random(&mut rng);
            let m = Modification::random(&reference, &mut rng);
            let Some(target) = m.apply(&reference, &mut rng) else {
                continue;
            };
            let other = Scene::random(&mut rng);
            let Some(d) = m.decoy(&target, &other, &mut rng) else {
                continue;
            };
            made += 1;
            match m {
                Modification::Recolour(i, _)
                | Modification::Reshape(i, _)
                | Modification::Resize(i, _)
                | Modification::Move(i, _) => {
                    assert!(d.objects.contains(&target.objects[i]), "{m:?} {d:?}")
                }
                Modification::Add(o) => assert!(d.objects.contains(&o)),
                Modification::Background(b) => assert_eq!(d.background, b),
                Modification::Remove(_) => assert_eq!(d, other),
            }
            // Objects stay distinct by cell and by (shape, colour).
            for (a, x) in d.objects.iter().enumerate() {
                for y in &d.objects[a + 1..] {
                    assert!(x.cell != y.cell && (x.shape, x.colour) != (y.shape, y.colour));
                }
            }
        }
        assert!(made > 200, "only {made} decoys");
    }
}
