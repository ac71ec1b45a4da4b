"""Builds crates/geo/data/kommuner.csv from
 - Kartverket 2024 kommune geometry (robhop/fylker-og-kommuner Kommuner-M.geojson, WGS84)
 - aprestmo/norway-geodata data/municipalities-2025.json (Norwegian name, admin centre, area)
Centroid and land area are computed here on a sinusoidal (equal-area) projection
around each kommune's own central meridian; extent is the largest distance from the
centroid to any boundary vertex (great circle)."""
import csv, json, math, sys

R = 6371.0088  # mean Earth radius, km

def ring_area_centroid(ring, lon0):
    # shoelace on sinusoidal projection (equal-area)
    pts = [(R * math.radians(lon - lon0) * math.cos(math.radians(lat)), R * math.radians(lat)) for lon, lat in ring]
    a = cx = cy = 0.0
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        c = x1 * y2 - x2 * y1
        a += c; cx += (x1 + x2) * c; cy += (y1 + y2) * c
    a /= 2
    if a == 0:
        return 0.0, 0.0, 0.0
    return abs(a), cx / (6 * a), cy / (6 * a)

def polygons(geom):
    if geom['type'] == 'Polygon':
        return [geom['coordinates']]
    if geom['type'] == 'MultiPolygon':
        return geom['coordinates']
    raise ValueError(geom['type'])

def haversine(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(h))

geo = json.load(open(sys.argv[1]))['features']
meta = {m['id']: m for m in json.load(open(sys.argv[2]))}
rows = []
for f in geo:
    num = f['properties']['kommunenummer']
    polys = polygons(f['geometry'])
    lons = [lon for p in polys for ring in p for lon, _ in ring]
    lon0 = (min(lons) + max(lons)) / 2
    A = SX = SY = 0.0
    for p in polys:
        for i, ring in enumerate(p):
            a, cx, cy = ring_area_centroid(ring, lon0)
            s = 1 if i == 0 else -1
            A += s * a; SX += s * a * cx; SY += s * a * cy
    cx, cy = SX / A, SY / A
    lat = math.degrees(cy / R)
    lon = lon0 + math.degrees(cx / (R * math.cos(math.radians(lat))))
    extent = max(haversine(lat, lon, la, lo) for p in polys for ring in p for lo, la in ring)
    m = meta[num]
    rows.append(dict(number=num, name=m['name_no'], official_name=f['properties']['kommunenavn'],
                     admin_centre=m['adm_center'], lat=f'{lat:.4f}', lon=f'{lon:.4f}',
                     area_km2=f'{A:.1f}', extent_km=f'{extent:.1f}', ssb_area=m['area']))
rows.sort(key=lambda r: r['number'])
w = csv.DictWriter(sys.stdout, fieldnames=['number', 'name', 'official_name', 'admin_centre', 'lat', 'lon', 'area_km2', 'extent_km'], extrasaction='ignore', lineterminator='\n')
w.writeheader()
w.writerows(rows)
bad = [(r['number'], r['name'], r['area_km2'], r['ssb_area']) for r in rows if abs(float(r['area_km2']) / r['ssb_area'] - 1) > 0.15]
print(f'{len(rows)} rows; area deviates >15% from the published area: {bad}', file=sys.stderr)
