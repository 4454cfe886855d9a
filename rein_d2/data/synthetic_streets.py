"""Procedural street scenes for the CPU quick start: a miniature GTAV -> Cityscapes shift.

Every frame is a perspective street seen from a car (pinhole camera at height ``ch`` looking
along +z): sky, buildings with windows along both sides, a road with lane markings, sidewalks,
grass verges, trees, poles with traffic lights / signs, walls, fences and road users (cars,
trucks, buses, trams, persons, riders on bicycles / motorcycles). Labels are the 19 Cityscapes
train ids, drawn with exactly the same shapes as the image but without antialiasing, so they
stay pure ids.

Two styles share the geometry rules and differ in appearance only:

* ``"source"`` - a synthetic-game look: saturated flat colours, blue sunny sky, sunlit /
  shaded facades, car shadows, light noise;
* ``"target"`` - a "real camera" look: muted greyish palette, overcast grey sky, haze,
  low-frequency illumination, texture noise, blur, lower contrast, vignette and a slightly
  lower camera (horizon a bit further down).

    import rein_d2                                       # registers the default sets (lazy)
    DatasetCatalog.get("synthstreets_source_train")      # imports this module, generates
"""
import os
import sys

import cv2
import numpy as np
import tqdm
from .datasets.common import colorize, write_png_atomic
from .datasets.synthstreets import SPLITS, register_synthetic_streets  # noqa: F401  (re-exported)

__all__ = [
    "STYLES", "SPLITS", "render_scene", "generate", "register_synthetic_streets", "colorize",
    "make_mosaic",
]

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)

STYLES = ("source", "target")

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT

# ----------------------------------------------------------------------------- palettes
# Per style: class -> list of base RGB colours (one is picked per instance, then jittered).
_PALETTES = {
    "source": {
        "sky_top": (40, 110, 235), "sky_horizon": (150, 205, 255), "cloud": (250, 250, 255),
        "fog": (175, 210, 250), "fog_dist": 700.0,
        ROAD: [(62, 62, 70), (75, 72, 80)],
        "marking": [(245, 245, 245), (250, 210, 40)],
        SIDEWALK: [(200, 180, 150), (215, 200, 175), (190, 175, 190)],
        BUILDING: [(230, 200, 140), (200, 90, 60), (240, 235, 220), (150, 190, 220),
                   (235, 160, 90), (180, 120, 200)],
        "window": [(40, 120, 200), (70, 170, 240), (30, 60, 120)],
        WALL: [(235, 220, 170), (190, 110, 80), (220, 220, 220)],
        FENCE: [(160, 110, 60), (90, 200, 90), (200, 200, 210)],
        POLE: [(120, 125, 135), (60, 140, 70)],
        LIGHT: [(250, 200, 20), (30, 30, 30)],
        SIGN: [(235, 30, 30), (30, 80, 230), (250, 210, 20)],
        VEGETATION: [(30, 170, 40), (60, 200, 30), (20, 140, 60)],
        "trunk": [(120, 80, 40)],
        TERRAIN: [(120, 210, 60), (170, 200, 80)],
        "clothes": [(230, 30, 30), (30, 60, 230), (250, 220, 20), (30, 200, 80), (250, 250, 250),
                    (30, 30, 30), (250, 120, 10)],
        "skin": [(250, 200, 160), (200, 140, 90), (130, 80, 50)],
        CAR: [(220, 20, 30), (20, 70, 220), (250, 210, 0), (245, 245, 245), (25, 25, 30),
              (0, 170, 90), (250, 120, 0)],
        TRUCK: [(230, 230, 230), (240, 90, 20), (30, 120, 220)],
        BUS: [(240, 190, 0), (220, 30, 30), (20, 150, 220)],
        TRAIN: [(230, 30, 40), (250, 250, 250), (0, 120, 200)],
        MOTORCYCLE: [(230, 20, 20), (20, 20, 20), (30, 90, 240)],
        BICYCLE: [(240, 40, 160), (20, 200, 220), (250, 230, 0)],
        "tyre": [(20, 20, 22)],
        "glass": [(60, 110, 160)],
    },
    "target": {
        "sky_top": (170, 178, 188), "sky_horizon": (215, 218, 220), "cloud": (190, 195, 200),
        "fog": (190, 195, 198), "fog_dist": 160.0,
        ROAD: [(128, 118, 126), (118, 112, 118)],
        "marking": [(200, 200, 195)],
        SIDEWALK: [(160, 150, 160), (150, 148, 140)],
        BUILDING: [(110, 105, 100), (140, 130, 120), (95, 90, 95), (150, 140, 135),
                   (120, 100, 90)],
        "window": [(60, 65, 70), (90, 95, 100)],
        WALL: [(130, 125, 115), (110, 110, 110)],
        FENCE: [(120, 115, 100), (100, 100, 105)],
        POLE: [(105, 105, 110), (80, 85, 80)],
        LIGHT: [(60, 60, 55), (90, 85, 60)],
        SIGN: [(170, 110, 100), (110, 120, 150), (180, 170, 110)],
        VEGETATION: [(95, 115, 60), (75, 95, 55), (110, 120, 80)],
        "trunk": [(80, 70, 60)],
        TERRAIN: [(140, 145, 100), (125, 120, 95)],
        "clothes": [(60, 60, 70), (100, 90, 80), (130, 120, 110), (70, 80, 100), (150, 145, 140)],
        "skin": [(190, 160, 140), (140, 110, 90)],
        CAR: [(70, 70, 80), (150, 150, 155), (110, 60, 60), (60, 70, 100), (180, 180, 180)],
        TRUCK: [(160, 160, 160), (110, 110, 100)],
        BUS: [(180, 180, 170), (100, 110, 130)],
        TRAIN: [(150, 150, 140), (90, 100, 120)],
        MOTORCYCLE: [(60, 60, 60), (110, 80, 80)],
        BICYCLE: [(80, 80, 90), (120, 110, 100)],
        "tyre": [(35, 35, 35)],
        "glass": [(70, 80, 85)],
    },
}

# Geometry per style: horizon (fraction of H), camera height (m). Everything else is shared.
_CAMERA = {"source": (0.40, 1.6), "target": (0.44, 1.45)}


# ----------------------------------------------------------------------------- painter
class _Painter:
    """Draws the same shapes into the RGB image (antialiased) and the label (pure ids)."""

    def __init__(self, rng, height, width, style):
        self.rng, self.H, self.W, self.style = rng, height, width, style
        self.pal = _PALETTES[style]
        hfrac, ch = _CAMERA[style]
        self.f = 0.5 * width
        self.yh = height * (hfrac + rng.uniform(-0.03, 0.03))
        self.xv = width * (0.5 + rng.uniform(-0.05, 0.05))
        self.ch = ch + rng.uniform(-0.1, 0.1)
        self.img = np.zeros((height, width, 3), np.uint8)
        self.lab = np.zeros((height, width), np.uint8)

    # --- colours
    def colour(self, key, z=None, jitter=12.0, shade=1.0):
        base = np.asarray(self.pal[key][self.rng.integers(len(self.pal[key]))], np.float64)
        c = base * self.rng.uniform(0.88, 1.12) * shade + self.rng.normal(0.0, jitter, 3)
        return self.fog(c, z)

    def fog(self, c, z):
        c = np.asarray(c, np.float64)
        if z is not None:
            a = 1.0 - np.exp(-max(z, 0.0) / self.pal["fog_dist"])
            c = (1.0 - a) * c + a * np.asarray(self.pal["fog"], np.float64)
        return c

    # --- projection: world (X right, Y up from the ground, z forward) -> pixels
    def proj(self, X, Y, z):
        z = np.maximum(np.asarray(z, np.float64), 0.3)
        return np.stack([self.xv + self.f * np.asarray(X) / z,
                         self.yh + self.f * (self.ch - np.asarray(Y)) / z], -1)

    # --- primitives
    @staticmethod
    def _fix(pts):
        return np.round(np.clip(np.asarray(pts, np.float64), -1e5, 1e5) * _SCALE).astype(np.int32)

    def polys(self, pts_list, cls, colour):
        """Filled polygons (list of (N, 2) pixel arrays); cls None = image only."""
        ps = [self._fix(p) for p in pts_list]
        c = tuple(float(v) for v in np.clip(colour, 0, 255))
        cv2.fillPoly(self.img, ps, c, cv2.LINE_AA, shift=_SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, ps, int(cls), cv2.LINE_8, shift=_SHIFT)

    def poly(self, pts, cls, colour):
        self.polys([pts], cls, colour)

    def circle(self, centre, radius, cls, colour, thickness=-1):
        cx, cy = self._fix(centre)
        r = int(max(round(radius * _SCALE), _SCALE // 2))
        c = tuple(float(v) for v in np.clip(colour, 0, 255))
        cv2.circle(self.img, (int(cx), int(cy)), r, c, thickness, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.circle(self.lab, (int(cx), int(cy)), r, int(cls), thickness, cv2.LINE_8, _SHIFT)

    def front(self, XY, z, cls, colour):
        """Polygon in the plane z = const, given as (X, Y) metres."""
        XY = np.asarray(XY, np.float64)
        self.poly(self.proj(XY[:, 0], XY[:, 1], np.full(len(XY), z)), cls, colour)

    def side(self, zY, X, cls, colour):
        """Polygon in the plane X = const, given as (z, Y) metres."""
        zY = np.asarray(zY, np.float64)
        self.poly(self.proj(np.full(len(zY), X), zY[:, 1], zY[:, 0]), cls, colour)

    def ground(self, Xz, cls, colour):
        """Polygon on the ground plane, given as (X, z) metres."""
        Xz = np.asarray(Xz, np.float64)
        self.poly(self.proj(Xz[:, 0], np.zeros(len(Xz)), Xz[:, 1]), cls, colour)

    def ball(self, X, Y, z, r, cls, colour, thickness_m=None):
        t = -1 if thickness_m is None else max(1, int(round(self.f * thickness_m / z)))
        self.circle(self.proj(X, Y, z), self.f * r / z, cls, colour, t)

    def bar(self, X, Y0, Y1, z, w, cls, colour):
        """Vertical bar (pole, trunk) of width w metres facing the camera."""
        self.front([(X - w / 2, Y0), (X + w / 2, Y0), (X + w / 2, Y1), (X - w / 2, Y1)], z, cls, colour)


# ----------------------------------------------------------------------------- scene parts
Z_FAR = 160.0


def _sky(p):
    H, W = p.H, p.W
    t = np.clip(np.arange(H, dtype=np.float64) / max(p.yh, 1.0), 0, 1)[:, None, None]
    top = np.asarray(p.pal["sky_top"], np.float64) + p.rng.normal(0, 8, 3)
    hor = np.asarray(p.pal["sky_horizon"], np.float64) + p.rng.normal(0, 6, 3)
    p.img[:] = np.clip((1 - t) * top + t * hor, 0, 255).astype(np.uint8)
    p.lab[:] = SKY
    # clouds (image only): a few soft ellipses
    for _ in range(p.rng.poisson(3 if p.style == "source" else 6)):
        c = (float(p.rng.uniform(0, W)), float(p.rng.uniform(0, p.yh * 0.7)))
        axes = (float(p.rng.uniform(15, 60)), float(p.rng.uniform(4, 14)))
        col = tuple(float(v) for v in p.colour("cloud", jitter=5))
        cv2.ellipse(p.img, (int(c[0]), int(c[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, col,
                    -1, cv2.LINE_AA)


def _layout(rng):
    """The street's cross-section (metres, camera at X = 0)."""
    n_lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(3.0, 3.6)
    cam_lane = int(rng.integers(n_lanes // 2, n_lanes))  # drive in a right-hand lane
    XL = -(cam_lane + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
    XR = XL + n_lanes * lane_w
    L = {"n_lanes": n_lanes, "lane_w": lane_w, "XL": XL, "XR": XR,
         "lanes": [XL + (i + 0.5) * lane_w for i in range(n_lanes)], "n_oncoming": n_lanes // 2}
    for s, edge in (("L", XL), ("R", XR)):
        sign = -1 if s == "L" else 1
        verge = rng.uniform(1.0, 2.5) if rng.random() < 0.45 else 0.0  # grass strip next to road
        walk = rng.uniform(2.0, 5.0)
        setback = rng.uniform(0.0, 3.0) if rng.random() < 0.35 else 0.0  # terrain before facades
        L[s] = {"sign": sign, "edge": edge, "verge": verge,
                "walk0": edge + sign * verge, "walk1": edge + sign * (verge + walk),
                "facade": edge + sign * (verge + walk + setback)}
    return L


def _ground(p, L):
    zn, zf = 0.5, Z_FAR
    y0 = int(np.floor(p.yh))
    p.img[y0:] = np.clip(p.colour(TERRAIN, z=40), 0, 255).astype(np.uint8)
    p.lab[y0:] = TERRAIN
    for s in ("L", "R"):
        S = L[s]
        col = p.colour(SIDEWALK, z=20, jitter=8)
        p.ground([(S["walk0"], zn), (S["walk1"], zn), (S["walk1"], zf), (S["walk0"], zf)], SIDEWALK, col)
        # curb line (image only)
        k = S["walk0"]
        p.ground([(k, zn), (k + S["sign"] * 0.2, zn), (k + S["sign"] * 0.2, zf), (k, zf)], None,
                 p.fog(np.asarray(col) * 0.8, 20))
        if S["verge"] > 0:
            p.ground([(S["edge"], zn), (S["walk0"], zn), (S["walk0"], zf), (S["edge"], zf)], TERRAIN,
                     p.colour(TERRAIN, z=20))
        # terrain patches on the sidewalk (tree pits, lawns)
        for _ in range(p.rng.poisson(1.0)):
            z0 = p.rng.uniform(4, 60)
            a, b = sorted((S["walk0"] + S["sign"] * 0.5, S["walk1"] - S["sign"] * 0.3))
            x0 = p.rng.uniform(a, b)
            x1 = x0 + S["sign"] * p.rng.uniform(0.8, 2.0)
            p.ground([(x0, z0), (x1, z0), (x1, z0 + p.rng.uniform(2, 8)), (x0, z0 + 4)], TERRAIN,
                     p.colour(TERRAIN, z=z0))
    p.ground([(L["XL"], zn), (L["XR"], zn), (L["XR"], zf), (L["XL"], zf)], ROAD, p.colour(ROAD, z=30, jitter=6))
    # lane markings (still road)
    mk = p.colour("marking", jitter=5)
    for i in range(1, L["n_lanes"]):
        x = L["XL"] + i * L["lane_w"]
        solid = i == L["n_oncoming"] and p.rng.random() < 0.5
        period, dash = (Z_FAR, Z_FAR) if solid else (p.rng.uniform(8, 12), 3.0)
        z = p.rng.uniform(0.5, 4) if not solid else 0.5
        while z < 90:
            p.ground([(x - 0.08, z), (x + 0.08, z), (x + 0.08, min(z + dash, 90)), (x - 0.08, min(z + dash, 90))],
                     ROAD, p.fog(mk, z))
            z += period
    for x in (L["XL"] + 0.3, L["XR"] - 0.3):  # edge lines
        p.ground([(x - 0.07, 0.5), (x + 0.07, 0.5), (x + 0.07, 90), (x - 0.07, 90)], ROAD, p.fog(mk, 30) * 0.95)
    if p.rng.random() < 0.3:  # zebra crossing
        z0 = p.rng.uniform(8, 25)
        for x in np.arange(L["XL"] + 0.5, L["XR"] - 0.5, 1.0):
            p.ground([(x, z0), (x + 0.5, z0), (x + 0.5, z0 + 3), (x, z0 + 3)], ROAD, p.fog(mk, z0))


def _skyline(p, L):
    """Far buildings / trees across the end of the street."""
    X = -220.0
    while X < 220:
        w = p.rng.uniform(8, 30)
        if p.rng.random() < 0.25:
            c = p.colour(VEGETATION, z=Z_FAR)
            for _ in range(4):
                p.ball(X + p.rng.uniform(0, w), p.rng.uniform(3, 8), Z_FAR, p.rng.uniform(3, 6), VEGETATION, c)
        else:
            h = p.rng.uniform(6, 45)
            p.front([(X, 0), (X + w, 0), (X + w, h), (X, h)], Z_FAR, BUILDING, p.colour(BUILDING, z=Z_FAR))
        X += w


def _windows_side(p, X, z0, z1, h, colour):
    polys = []
    fl = p.rng.uniform(2.8, 3.6)
    col_step = p.rng.uniform(2.2, 3.5)
    ww, wh = col_step * p.rng.uniform(0.35, 0.6), fl * p.rng.uniform(0.35, 0.55)
    for Y in np.arange(fl * 0.6, h - 1.0, fl):
        for z in np.arange(z0 + 0.8, z1 - ww, col_step):
            if p.f * ww / z < 1.2:
                continue
            q = p.proj(np.full(4, X), np.array([Y, Y, Y + wh, Y + wh]), np.array([z, z + ww, z + ww, z]))
            polys.append(q)
    if polys:
        p.polys(polys, None, colour)


def _tree(p, X, z, h=None, with_trunk=True):
    h = p.rng.uniform(4.0, 8.0) if h is None else h
    r = h * p.rng.uniform(0.25, 0.4)
    if with_trunk:
        p.bar(X, 0, h - r, z, 0.3, VEGETATION, p.colour("trunk", z=z, jitter=8))
    base = p.colour(VEGETATION, z=z)
    for _ in range(int(p.rng.integers(3, 7))):
        c = base * p.rng.uniform(0.8, 1.15)
        p.ball(X + p.rng.normal(0, r * 0.45), h - r + p.rng.normal(0, r * 0.35), z, r * p.rng.uniform(0.55, 0.9),
               VEGETATION, p.fog(c, 0))


def _side_segments(p, L):
    """Facades / gaps along both sides, far to near."""
    for s in ("L", "R"):
        S = L[s]
        Xf, sign = S["facade"], S["sign"]
        shade = 1.0 if (p.style != "source" or s == "L") else 0.72  # sun from the left in the game
        segs, z = [], p.rng.uniform(1.0, 4.0)
        while z < Z_FAR:
            length = p.rng.uniform(8, 30)
            kind = "building" if p.rng.random() < 0.7 else "gap"
            segs.append((kind, z, min(z + length, Z_FAR)))
            z += length
        for kind, z0, z1 in reversed(segs):
            zm = 0.5 * (z0 + z1)
            if kind == "building":
                h = p.rng.uniform(6, 32)
                col = p.colour(BUILDING, z=zm, jitter=10, shade=shade)
                p.side([(z0, 0), (z1, 0), (z1, h), (z0, h)], Xf, BUILDING, col)
                _windows_side(p, Xf, z0, z1, h, p.colour("window", z=zm, jitter=10, shade=shade))
                # ground-floor band
                p.side([(z0, 0), (z1, 0), (z1, 0.4), (z0, 0.4)], Xf, BUILDING, col * 0.8)
                # the face towards the camera (seen when the nearer segment is a gap)
                fc = p.colour(BUILDING, z=z0, jitter=10, shade=0.85)
                p.front([(Xf, 0), (Xf + sign * 40, 0), (Xf + sign * 40, h), (Xf, h)], z0, BUILDING, fc)
            else:
                # things seen through the gap: trees and terrain behind a wall / fence / hedge
                p.ground([(Xf, z0), (Xf + sign * 40, z0), (Xf + sign * 40, z1), (Xf, z1)], TERRAIN,
                         p.colour(TERRAIN, z=zm))
                for zt in np.arange(z1 - 2, z0, -p.rng.uniform(3, 7)):
                    if p.rng.random() < 0.7:
                        _tree(p, Xf + sign * p.rng.uniform(2, 8), zt, h=p.rng.uniform(4, 10))
                u = p.rng.random()
                if u < 0.4:
                    h = p.rng.uniform(1.0, 2.5)
                    p.side([(z0, 0), (z1, 0), (z1, h), (z0, h)], Xf, WALL, p.colour(WALL, z=zm, shade=shade))
                    p.side([(z0, h - 0.15), (z1, h - 0.15), (z1, h), (z0, h)], Xf, WALL,
                           p.colour(WALL, z=zm, shade=shade * 0.8))
                elif u < 0.8:
                    _fence_side(p, Xf, z0, z1, p.rng.uniform(1.0, 2.0), shade)
                else:  # hedge
                    h = p.rng.uniform(0.8, 1.8)
                    zz = np.linspace(z0, z1, 12)
                    top = h + p.rng.uniform(-0.2, 0.2, len(zz))
                    pts = [(z0, 0)] + list(zip(zz, top)) + [(z1, 0)]
                    p.side(pts, Xf, VEGETATION, p.colour(VEGETATION, z=zm))


def _fence_side(p, X, z0, z1, h, shade=1.0):
    col = p.colour(FENCE, z=0.5 * (z0 + z1), shade=shade)
    # rails and posts are fence; the panel between them is a darker mesh, also fence
    p.side([(z0, 0.05), (z1, 0.05), (z1, h), (z0, h)], X, FENCE, col * 0.55)
    for Y in (h * 0.45, h - 0.08):
        p.side([(z0, Y - 0.06), (z1, Y - 0.06), (z1, Y + 0.06), (z0, Y + 0.06)], X, FENCE, col)
    for z in np.arange(z0, z1, 1.2):
        if p.f * 0.08 / z > 0.4:
            p.side([(z, 0), (z + 0.08, 0), (z + 0.08, h), (z, h)], X, FENCE, col)


# --- objects (drawn back to front) --------------------------------------------------------
def _vehicle(p, cls, X, z, oncoming):
    dims = {CAR: (1.8, 1.5, 4.4), TRUCK: (2.45, 3.5, 8.0), BUS: (2.55, 3.2, 12.0), TRAIN: (2.7, 3.7, 30.0)}
    w, h, Ln = dims[cls]
    w *= p.rng.uniform(0.95, 1.05)
    h *= p.rng.uniform(0.92, 1.08)
    body = p.colour(cls, z=z, jitter=10)
    glass = p.colour("glass", z=z, jitter=6)
    tyre = p.colour("tyre", z=z, jitter=3)
    clr = 0.3 if cls != TRAIN else 0.5  # ground clearance (wheels / bogies below)
    # shadow (image only, sunny source)
    if p.style == "source":
        p.ground([(X - w / 2 - 0.1, z - 0.3), (X + w / 2 + 0.4, z - 0.3), (X + w / 2 + 0.4, z + Ln),
                  (X - w / 2 - 0.1, z + Ln)], None, p.fog(p.colour(ROAD, jitter=0) * 0.45, z))
    # side face towards the road centre
    Xs = X - w / 2 if X - w / 2 > 0 else (X + w / 2 if X + w / 2 < 0 else None)
    if Xs is not None:
        sd = body * 0.8
        if cls == CAR:
            prof = [(z, clr), (z + Ln, clr), (z + Ln, 0.85), (z + Ln - 0.9, 0.9), (z + Ln - 1.5, h),
                    (z + 1.0, h), (z + 0.4, 0.9), (z, 0.85)]
            p.side(prof, Xs, CAR, sd)
            p.side([(z + 1.1, 0.95), (z + Ln - 1.5, 0.95), (z + Ln - 1.6, h - 0.08), (z + 1.15, h - 0.08)],
                   Xs, CAR, glass)
            for zw in (z + 0.8, z + Ln - 0.9):
                t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
                p.side(np.stack([zw + 0.33 * np.cos(t), 0.33 + 0.33 * np.sin(t)], 1), Xs, CAR, tyre)
        else:
            p.side([(z, clr), (z + Ln, clr), (z + Ln, h), (z, h)], Xs, cls, sd)
            if cls in (BUS, TRAIN):
                p.side([(z + 0.5, h * 0.5), (z + Ln - 0.5, h * 0.5), (z + Ln - 0.5, h * 0.85), (z + 0.5, h * 0.85)],
                       Xs, cls, glass)
                if cls == TRAIN:
                    for zz in np.arange(z + 4, z + Ln, 7.5):  # door / segment gaps
                        p.side([(zz, clr), (zz + 0.25, clr), (zz + 0.25, h), (zz, h)], Xs, cls, body * 0.5)
            else:  # truck: cargo box ahead, lower cab further along
                p.side([(z + Ln * 0.72, clr), (z + Ln * 0.72 + 0.15, clr), (z + Ln * 0.72 + 0.15, h),
                        (z + Ln * 0.72, h)], Xs, cls, body * 0.5)
            for zw in (z + 1.0, z + Ln - 1.5) if cls != TRAIN else np.arange(z + 2, z + Ln, 7.5):
                t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
                r = 0.5 if cls != TRAIN else 0.4
                p.side(np.stack([zw + r * np.cos(t), r + r * np.sin(t)], 1), Xs, cls, tyre)
    # the face towards the camera (rear, or front when oncoming)
    a, b = X - w / 2, X + w / 2
    if cls == CAR:
        p.front([(a + 0.05, 0), (a + 0.35, 0), (a + 0.35, 0.4), (a + 0.05, 0.4)], z, CAR, tyre)
        p.front([(b - 0.35, 0), (b - 0.05, 0), (b - 0.05, 0.4), (b - 0.35, 0.4)], z, CAR, tyre)
        prof = [(a, clr), (b, clr), (b, 0.85), (b - 0.2, h), (a + 0.2, h), (a, 0.85)]
        p.front(prof, z, CAR, body)
        p.front([(a + 0.3, 0.95), (b - 0.3, 0.95), (b - 0.4, h - 0.07), (a + 0.4, h - 0.07)], z, CAR, glass)
    else:
        p.front([(a + 0.1, 0), (b - 0.1, 0), (b - 0.1, clr + 0.1), (a + 0.1, clr + 0.1)], z, cls, tyre)
        p.front([(a, clr), (b, clr), (b, h), (a, h)], z, cls, body)
        if cls == TRUCK and not oncoming:
            p.front([(0.5 * (a + b) - 0.03, clr + 0.2), (0.5 * (a + b) + 0.03, clr + 0.2), (0.5 * (a + b) + 0.03, h - 0.1),
                     (0.5 * (a + b) - 0.03, h - 0.1)], z, cls, body * 0.6)  # cargo doors
        else:
            top = h * (0.55 if cls == TRUCK else 0.45)
            p.front([(a + 0.15, top), (b - 0.15, top), (b - 0.15, h - 0.2), (a + 0.15, h - 0.2)], z, cls, glass)
    lamp = p.fog((250, 250, 225) if oncoming else (230, 20, 20), z)
    ly = 0.7 if cls == CAR else clr + 0.35
    for x in (a + 0.12, b - 0.32):
        p.front([(x, ly), (x + 0.2, ly), (x + 0.2, ly + 0.15), (x, ly + 0.15)], z, None, lamp)


def _person(p, X, z, cls=PERSON, seated_at=None):
    h = p.rng.uniform(1.55, 1.9)
    shirt, pants = p.colour("clothes", z=z, jitter=15), p.colour("clothes", z=z, jitter=15) * 0.7
    skin = p.colour("skin", z=z, jitter=8)
    if seated_at is None:
        hip, sh = 0.52 * h, 0.82 * h
        st = p.rng.uniform(-0.12, 0.12)
        for dx, sx in ((-0.14, -st), (0.02, st)):
            p.front([(X + dx, hip), (X + dx + 0.12, hip), (X + dx + 0.12 + sx, 0), (X + dx + sx, 0)], z, cls, pants)
    else:
        hip = seated_at
        sh, h = hip + 0.55, hip + 0.85
        p.front([(X - 0.15, hip), (X + 0.15, hip), (X + 0.2, hip - 0.55), (X + 0.05, hip - 0.55)], z, cls, pants)
    p.front([(X - 0.22, sh), (X + 0.22, sh), (X + 0.18, hip), (X - 0.18, hip)], z, cls, shirt)
    for sgn in (-1, 1):
        p.front([(X + sgn * 0.2, sh), (X + sgn * 0.27, sh - 0.05), (X + sgn * 0.28, hip - 0.05),
                 (X + sgn * 0.21, hip - 0.05)], z, cls, shirt * 0.9)
    p.front([(X - 0.05, sh), (X + 0.05, sh), (X + 0.05, sh + 0.08), (X - 0.05, sh + 0.08)], z, cls, skin)
    p.ball(X, h - 0.12, z, 0.115, cls, skin)
    p.front([(X - 0.11, h - 0.1), (X + 0.11, h - 0.1), (X + 0.1, h + 0.01), (X - 0.1, h + 0.01)], z, cls,
            p.fog(p.colour("tyre", jitter=10) * 1.5, z))  # hair / helmet


def _two_wheeler(p, cls, X, z, ridden):
    """Bicycle / motorcycle seen from the side (in the plane z = const), rider optional."""
    col = p.colour(cls, z=z, jitter=10)
    tyre = p.colour("tyre", z=z, jitter=3)
    r = 0.34 if cls == BICYCLE else 0.32
    half = 0.52 if cls == BICYCLE else 0.7
    d = p.rng.choice([-1.0, 1.0])
    thick = 0.05 if cls == BICYCLE else 0.1
    for xw in (X - half, X + half):
        p.ball(xw, r, z, r, cls, tyre, thickness_m=thick)
    if cls == BICYCLE:
        seat, bar = (X - d * 0.2, 0.9), (X + d * 0.35, 0.95)
        for (x0, y0), (x1, y1) in (((X - d * half, r), seat), ((X - d * half, r), (X, r)), ((X, r), seat),
                                   ((X, r), bar), (seat, bar), (bar, (X + d * half, r))):
            n = np.array([-(y1 - y0), x1 - x0])
            n = n / (np.linalg.norm(n) + 1e-9) * 0.025
            p.front([(x0 + n[0], y0 + n[1]), (x1 + n[0], y1 + n[1]), (x1 - n[0], y1 - n[1]), (x0 - n[0], y0 - n[1])],
                    z, cls, col)
        seat_y = 0.92
    else:
        p.front([(X - d * 0.6, 0.45), (X + d * 0.55, 0.4), (X + d * 0.6, 0.8), (X + d * 0.2, 0.95),
                 (X - d * 0.3, 0.85), (X - d * 0.7, 0.75)], z, cls, col)
        p.front([(X + d * 0.45, 0.85), (X + d * 0.55, 0.85), (X + d * 0.6, 1.15), (X + d * 0.5, 1.15)], z, cls,
                col * 0.6)
        seat_y = 0.85
    if ridden:
        _person(p, X - d * 0.1, z - 0.05, cls=RIDER, seated_at=seat_y)


def _pole(p, X, z, kind, toward_road):
    """Pole with, by kind, a lamp arm, a traffic light or a sign."""
    h = p.rng.uniform(3.5, 8.0) if kind != "sign" else p.rng.uniform(2.5, 3.5)
    col = p.colour(POLE, z=z, jitter=8)
    p.bar(X, 0, h, z, 0.16 if kind != "sign" else 0.1, POLE, col)
    if kind == "lamp" or kind == "light_arm":
        arm = p.rng.uniform(1.5, 4.0)
        x1 = X + toward_road * arm
        p.front([(X, h - 0.12), (x1, h - 0.05), (x1, h + 0.05), (X, h)], z, POLE, col)
        if kind == "lamp":
            p.front([(x1 - 0.3, h - 0.15), (x1 + 0.3, h - 0.15), (x1 + 0.25, h + 0.05), (x1 - 0.25, h + 0.05)],
                    z, POLE, col * 0.8)
        else:
            _light(p, x1, h - 0.1, z)
    if kind in ("light", "light_arm"):
        _light(p, X, min(h, 3.5) if kind == "light_arm" else h, z)
    if kind in ("sign", "light") and (kind == "sign" or p.rng.random() < 0.5):
        _sign(p, X, (h - 0.1) if kind == "sign" else 2.4, z)


def _light(p, X, top, z):
    w, hh = 0.36, 1.0
    p.front([(X - w / 2, top - hh), (X + w / 2, top - hh), (X + w / 2, top), (X - w / 2, top)], z, LIGHT,
            p.colour(LIGHT, z=z, jitter=8))
    on = int(p.rng.integers(3))
    for i, c in enumerate([(255, 30, 20), (255, 190, 0), (30, 230, 90)]):
        c = np.asarray(c, np.float64) * (1.0 if i == on else 0.3)
        p.ball(X, top - 0.18 - i * 0.32, z, 0.11, LIGHT, p.fog(c, z))


def _sign(p, X, top, z):
    col = p.colour(SIGN, z=z, jitter=10)
    s = p.rng.uniform(0.5, 0.8)
    shape = p.rng.integers(3)
    cy = top - s / 2
    if shape == 0:
        p.ball(X, cy, z, s / 2, SIGN, col)
        p.ball(X, cy, z, s * 0.36, SIGN, p.fog((240, 240, 240), z) * (0.75 if p.style == "target" else 1))
    elif shape == 1:
        p.front([(X - s / 2, cy + s * 0.4), (X + s / 2, cy + s * 0.4), (X, cy - s * 0.45)], z, SIGN, col)
    else:
        p.front([(X - s * 0.6, cy - s / 2), (X + s * 0.6, cy - s / 2), (X + s * 0.6, cy + s / 2),
                 (X - s * 0.6, cy + s / 2)], z, SIGN, col)
        p.front([(X - s * 0.4, cy - 0.05), (X + s * 0.4, cy - 0.05), (X + s * 0.4, cy + 0.05),
                 (X - s * 0.4, cy + 0.05)], z, SIGN, p.fog((245, 245, 245), z))


def _objects(p, L):
    rng = p.rng
    objs = []  # (z, tiebreak, fn, args)

    def add(z, fn, *args):
        objs.append((float(z), len(objs), fn, args))

    lanes = L["lanes"]
    taken = []

    def free(X, z, length):
        for (x2, z2, l2) in taken:
            if abs(x2 - X) < 2.4 and z < z2 + l2 + 1.5 and z2 < z + length + 1.5:
                return False
        taken.append((X, z, length))
        return True

    def place_vehicle(cls, length, zr, X=None):
        for _ in range(6):
            i = int(rng.integers(len(lanes)))
            x = (lanes[i] + rng.uniform(-0.3, 0.3)) if X is None else X
            z = rng.uniform(*zr)
            if free(x, z, length):
                add(z, _vehicle, p, cls, x, z, X is None and i < L["n_oncoming"])
                return

    if rng.random() < 0.3:  # tram on the middle of the road
        place_vehicle(TRAIN, 30, (10, 45), X=0.5 * (L["XL"] + L["XR"]) + rng.uniform(-0.5, 0.5))
    for _ in range(rng.poisson(0.6)):
        place_vehicle(BUS, 12, (8, 70))
    for _ in range(rng.poisson(0.7)):
        place_vehicle(TRUCK, 8, (8, 70))
    for _ in range(rng.poisson(4.0) + 1):
        place_vehicle(CAR, 4.4, (5, 80))
    # parked cars along the kerbs
    for s in ("L", "R"):
        if rng.random() < 0.5:
            S = L[s]
            for z in np.arange(rng.uniform(5, 15), 70, rng.uniform(5.5, 9)):
                if rng.random() < 0.7:
                    x = S["edge"] - S["sign"] * 1.1
                    if free(x, z, 4.4):
                        add(z, _vehicle, p, CAR, x, z, False)
    # riders on the road near the kerb, or on the sidewalk
    for _ in range(rng.poisson(1.2)):
        cls = BICYCLE if rng.random() < 0.55 else MOTORCYCLE
        s = "L" if rng.random() < 0.4 else "R"
        S = L[s]
        x = S["edge"] - S["sign"] * rng.uniform(0.8, 1.5)
        z = rng.uniform(5, 50)
        if free(x, z, 2):
            add(z, _two_wheeler, p, cls, x, z, True)
    for _ in range(rng.poisson(0.8)):  # parked two-wheelers on the sidewalk
        S = L["L" if rng.random() < 0.5 else "R"]
        x = S["walk0"] + S["sign"] * rng.uniform(0.8, 1.6)
        z = rng.uniform(4, 40)
        add(z, _two_wheeler, p, BICYCLE if rng.random() < 0.5 else MOTORCYCLE, x, z, False)
    # pedestrians on the sidewalks, a few crossing
    for _ in range(rng.poisson(4.0)):
        S = L["L" if rng.random() < 0.5 else "R"]
        a, b = sorted((S["walk0"], S["walk1"]))
        z = rng.uniform(4, 60)
        add(z, _person, p, rng.uniform(a + 0.3, b - 0.3), z)
    for _ in range(rng.poisson(0.5)):
        z = rng.uniform(8, 30)
        x = rng.uniform(L["XL"], L["XR"])
        if free(x, z, 1):
            add(z, _person, p, x, z)
    # street furniture along the kerbs
    for s in ("L", "R"):
        S = L[s]
        toward = -S["sign"]
        xp = S["walk0"] + S["sign"] * 0.4
        z = rng.uniform(4, 15)
        while z < 90:
            kind = rng.choice(["lamp", "light", "light_arm", "sign", "plain"], p=[0.3, 0.2, 0.15, 0.25, 0.1])
            add(z, _pole, p, xp + S["sign"] * rng.uniform(0, 0.3), z, str(kind), toward)
            z += rng.uniform(10, 25)
        if rng.random() < 0.55:  # tree row
            xt = (S["edge"] + S["walk0"]) / 2 if S["verge"] > 0 else S["walk0"] + S["sign"] * 1.2
            for z in np.arange(rng.uniform(4, 12), 90, rng.uniform(7, 14)):
                if rng.random() < 0.8:
                    add(z, _tree, p, xt + rng.uniform(-0.2, 0.2), z)
        if rng.random() < 0.25:  # fence / wall between sidewalk and road, in 2 m chunks
            z0 = rng.uniform(4, 30)
            z1 = z0 + rng.uniform(10, 40)
            xf = S["walk0"] + S["sign"] * 0.15
            cls = FENCE if rng.random() < 0.6 else WALL
            h = rng.uniform(0.8, 1.3)
            col = p.colour(cls, z=z0)
            for zc in np.arange(z0, z1, 2.0):
                if cls == FENCE:
                    add(zc, _fence_side, p, xf, zc, zc + 2.0, h)
                else:
                    add(zc, p.side, [(zc, 0), (zc + 2.0, 0), (zc + 2.0, h), (zc, h)], xf, WALL, col)
    for z, _, fn, args in sorted(objs, key=lambda o: (-o[0], o[1])):
        fn(*args)


# ----------------------------------------------------------------------------- post-processing
def _finish(p):
    rng, img = p.rng, p.img.astype(np.float32)
    H, W = p.H, p.W
    if p.style == "source":
        grey = img.mean(2, keepdims=True)
        img = grey + 1.15 * (img - grey)  # punchy saturation
        img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    else:
        grey = img.mean(2, keepdims=True)
        img = grey + 0.6 * (img - grey)  # washed-out colours
        img = 128 + 0.8 * (img - 128) + np.float32(rng.uniform(-10, 10))  # low contrast, exposure
        img *= np.asarray([0.97, 1.0, 1.04], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
        # low-frequency illumination + texture noise
        lf = cv2.resize(rng.uniform(0.85, 1.15, (4, 8)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        img *= lf[..., None]
        tex = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
        img += 18.0 * tex[..., None] + rng.normal(0, 5.0, img.shape).astype(np.float32)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
        img *= (1.0 - 0.18 * r2)[..., None]
        img = cv2.GaussianBlur(img, (0, 0), 0.8)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- public API
def render_scene(rng, height=256, width=512, style="source"):
    """Render one street frame: (RGB image uint8 HxWx3, label uint8 HxW of train ids 0..18)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    p = _Painter(rng, int(height), int(width), style)
    L = _layout(rng)
    _sky(p)
    _ground(p, L)
    _skyline(p, L)
    _side_segments(p, L)
    _objects(p, L)
    return _finish(p), p.lab


def _frame_rng(seed, i):
    return np.random.default_rng([int(seed), int(i)])


def generate(root, split_name, n, style, height=256, width=512, seed=0, progress=True):
    """Write ``root/<split>/{images,labels}/<i:05d>.png`` for i < n (skipping existing pairs).

    Frame i depends only on (seed, i), so the output is deterministic and a resumed run gives
    the same files as an uninterrupted one. Returns detectron2 dataset dicts. With
    ``progress``, frames still to render are shown as a progress bar on stderr (the first use
    of a dataset renders it all and would otherwise look stuck); a complete split prints nothing.
    """
    img_dir = os.path.join(root, split_name, "images")
    lab_dir = os.path.join(root, split_name, "labels")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    out, missing = [], []
    for i in range(int(n)):
        fi, fl = os.path.join(img_dir, f"{i:05d}.png"), os.path.join(lab_dir, f"{i:05d}.png")
        if not (os.path.isfile(fi) and os.path.isfile(fl)):
            missing.append((i, fi, fl))
        out.append({"file_name": fi, "sem_seg_file_name": fl, "height": int(height), "width": int(width)})
    desc = f"generating synthstreets {split_name} ({style}) in {os.path.join(root, split_name)}"
    for i, fi, fl in tqdm.tqdm(missing, desc=desc, unit="frame", disable=not progress or not missing,
                               file=sys.stderr):
        img, lab = render_scene(_frame_rng(seed, i), height, width, style)
        write_png_atomic(fl, lab)
        write_png_atomic(fi, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out


def make_mosaic(pairs):
    """Rows of [image | colourised label] from a list of (RGB image, label) pairs."""
    rows = [np.concatenate([img, colorize(lab)], 1) for img, lab in pairs]
    return np.concatenate(rows, 0)
